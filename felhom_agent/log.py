"""Logging: text for humans, one JSON object per line for machines, journald-aware, redacting.

* ``text``: ``2026-11-26T10:00:00.123Z INFO felhom_agent.hub: message``. When stderr *is* the
  journal (``$JOURNAL_STREAM`` names stderr's device:inode, as systemd documents), lines carry
  the ``<N>`` syslog priority prefix instead of a timestamp, so journald keeps levels and adds
  its own time.
* ``json``: ``{"ts": …, "level": …, "logger": …, "msg": …}`` plus the record's ``extra``
  fields and ``exc`` for tracebacks.
* Redaction as defence in depth: every configured secret value is replaced by ``***`` in the
  final formatted line — message, arguments and traceback alike — so even a bug that formats
  a secret cannot leak it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterable, Mapping
from typing import IO, Any

from felhom_agent.secret import REDACTED, Secret
from felhom_agent.utc import format_utc

__all__ = ["LOGGER_NAME", "configure_logging", "stream_is_journal"]

LOGGER_NAME = "felhom_agent"

_LEVELS: Mapping[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

# sd-daemon(3) priorities: <3> error, <4> warning, <6> info, <7> debug.
_SYSLOG_PRIORITY: Mapping[int, int] = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}

# Attributes every LogRecord has; anything else came in through ``extra=``.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
) | {"message", "asctime", "taskName"}


def stream_is_journal(stream: IO[str], env: Mapping[str, str]) -> bool:
    """True when ``stream`` is connected to journald per ``$JOURNAL_STREAM`` (``dev:ino``)."""
    value = env.get("JOURNAL_STREAM")
    if not value:
        return False
    try:
        dev_text, ino_text = value.split(":", 1)
        stat = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return f"{stat.st_dev}:{stat.st_ino}" == f"{dev_text}:{ino_text}"


class _Redactor:
    """Replaces every known secret value in a string with ``***``."""

    def __init__(self, secrets: Iterable[Secret]) -> None:
        # Longest first, so a secret containing another is masked whole.
        values = {s.reveal() for s in secrets if s and len(s.reveal()) >= 4}
        self._values = sorted(values, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, REDACTED)
        return text


class TextFormatter(logging.Formatter):
    """Human lines; syslog ``<N>`` prefix and no timestamp when writing to the journal."""

    def __init__(self, *, journal: bool, redact: _Redactor) -> None:
        super().__init__()
        self._journal = journal
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        extras = _extras(record)
        if extras:
            message += " " + " ".join(f"{k}={_compact(v)}" for k, v in extras.items())
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        level = record.levelname
        if self._journal:
            prio = _SYSLOG_PRIORITY.get(record.levelno, 6)
            lines = f"{level} {record.name}: {message}".splitlines() or [""]
            # Prefix every line so continuation lines keep the level (sd-daemon(3)).
            text = "\n".join(f"<{prio}>{line}" for line in lines)
        else:
            text = f"{format_utc(record.created, millis=True)} {level} {record.name}: {message}"
        return self._redact(text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def __init__(self, *, redact: _Redactor) -> None:
        super().__init__()
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": format_utc(record.created, millis=True),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _extras(record).items():
            doc.setdefault(key, value)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return self._redact(json.dumps(doc, default=str, sort_keys=False))


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS}


def _compact(value: object) -> str:
    if isinstance(value, str) and value and " " not in value:
        return value
    return json.dumps(value, default=str)


def configure_logging(
    *,
    level: str = "info",
    fmt: str = "text",
    secrets: Iterable[Secret] = (),
    stream: IO[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> logging.Logger:
    """Configure the ``felhom_agent`` logger tree (not the root logger) and return it.

    Calling it again (SIGHUP reload) replaces the handler, so levels, format and the secret
    set follow the new config.

    Args:
        level: debug | info | warning | error.
        fmt: text | json.
        secrets: values the redaction filter masks in every line.
        stream: where lines go (default stderr).
        env: the environment, for ``$JOURNAL_STREAM`` (default ``os.environ``).
    """
    out = sys.stderr if stream is None else stream
    environ = os.environ if env is None else env
    redact = _Redactor(secrets)
    formatter: logging.Formatter
    if fmt == "json":
        formatter = JsonFormatter(redact=redact)
    else:
        formatter = TextFormatter(journal=stream_is_journal(out, environ), redact=redact)
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    logger = logging.getLogger(LOGGER_NAME)
    for old in list(logger.handlers):
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(_LEVELS.get(level, logging.INFO))
    logger.propagate = False
    return logger
