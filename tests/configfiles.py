"""Helpers that write agent config files for tests (owner-only, like a real install)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["FINGERPRINT", "HUB_TOKEN", "PROXMOX_SECRET", "base_config", "write_config"]

PROXMOX_SECRET = "3f1a9c2e-7b44-4d0e-9a51-c0ffee5ecre7"
HUB_TOKEN = "hub-bearer-token-5b7e0c1d9f"
FINGERPRINT = ":".join(["AB"] * 32)


def base_config(tmp: Path) -> dict[str, Any]:
    """A valid minimal configuration whose paths live under ``tmp``."""
    return {
        "host_id": "pve1",
        "state_dir": str(tmp / "state"),
        "proxmox": {
            "api_url": "https://127.0.0.1:8006",
            "node": "pve1",
            "token_id": "felhom@pve!agent",
            "token_secret": PROXMOX_SECRET,
            "tls_fingerprint": FINGERPRINT,
        },
    }


def write_config(tmp: Path, data: Any, *, name: str = "config.json", mode: int = 0o600) -> Path:
    """Write ``data`` (a dict as JSON, or a str verbatim) with ``mode`` and return the path."""
    path = tmp / name
    text = data if isinstance(data, str) else json.dumps(data)
    path.write_text(text)
    os.chmod(path, mode)
    return path
