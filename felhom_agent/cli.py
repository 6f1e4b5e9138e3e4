"""Command line (temporary bootstrap; replaced by the cli package)."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    return 0
