"""Logging formats, journald priority prefixes and secret redaction."""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path

from felhom_agent.log import configure_logging, stream_is_journal
from felhom_agent.secret import Secret

SECRET = "s3cr3t-value-0f-the-token"


def _logger_to(stream: io.StringIO, **kw: object) -> logging.Logger:
    configure_logging(stream=stream, env={}, **kw)  # type: ignore[arg-type]
    return logging.getLogger("felhom_agent.test")


def test_text_format_has_time_level_logger() -> None:
    """Text lines carry an ISO UTC time, the level and the logger name."""
    stream = io.StringIO()
    _logger_to(stream).info("hello %s", "world")
    line = stream.getvalue().strip()
    assert line.endswith("INFO felhom_agent.test: hello world")
    assert line[:4].isdigit() and "Z " in line


def test_json_format_one_object_per_line_with_extras() -> None:
    """JSON output is one object per line and keeps extra fields."""
    stream = io.StringIO()
    log = _logger_to(stream, fmt="json")
    log.warning("first", extra={"vmid": 101})
    log.info("second")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["level"] == "warning"
    assert first["msg"] == "first"
    assert first["vmid"] == 101


def test_level_filters() -> None:
    """Records below the configured level are dropped."""
    stream = io.StringIO()
    log = _logger_to(stream, level="warning")
    log.info("quiet")
    log.error("loud")
    assert "quiet" not in stream.getvalue()
    assert "loud" in stream.getvalue()


def test_journal_prefix_when_stderr_is_the_journal(tmp_path: Path) -> None:
    """With JOURNAL_STREAM naming the stream, lines get <N> syslog prefixes and no timestamp."""
    path = tmp_path / "journal"
    with path.open("w+") as stream:
        st = os.fstat(stream.fileno())
        env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert stream_is_journal(stream, env)
        configure_logging(stream=stream, env=env)
        log = logging.getLogger("felhom_agent.test")
        log.error("bad\nsecond line")
        log.warning("careful")
        log.info("fine")
        stream.flush()
    lines = path.read_text().splitlines()
    assert lines == ["<3>ERROR felhom_agent.test: bad", "<3>second line",
                     "<4>WARNING felhom_agent.test: careful", "<6>INFO felhom_agent.test: fine"]


def test_journal_stream_of_another_file_is_ignored(tmp_path: Path) -> None:
    """A JOURNAL_STREAM naming some other file does not switch to prefixes."""
    stream = io.StringIO()
    assert not stream_is_journal(stream, {"JOURNAL_STREAM": "1:2"})


def test_redaction_in_message_args_extras_and_traceback() -> None:
    """No configured secret value reaches any log line, whatever path it takes."""
    for fmt in ("text", "json"):
        stream = io.StringIO()
        log = _logger_to(stream, fmt=fmt, secrets=[Secret(SECRET)])
        log.info("token is %s", SECRET)
        log.info(f"inline {SECRET}")
        log.info("extra", extra={"header": f"PVEAPIToken=x!y={SECRET}"})
        try:
            raise RuntimeError(f"boom {SECRET}")
        except RuntimeError:
            log.exception("failed")
        text = stream.getvalue()
        assert SECRET not in text
        assert text.count("***") >= 4
