"""Loading the configuration: strict JSON file, then the environment overlay, then validation.

Order (``docs/architecture.md``, "Configuration"): the JSON file (strict: duplicate or unknown keys
are errors), then ``FELHOM_AGENT_*`` variables resolved against the key table (an unknown variable
is an error, so a typo cannot silently do nothing), then secrets from ``*_file`` keys or systemd's
``$CREDENTIALS_DIRECTORY``, then per-key and cross-key validation. Every failure raises
:class:`~felhom_agent.errors.ConfigError` naming the key, the value (``***`` for secrets) and what
is allowed. Environment and file access are injectable for tests.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from felhom_agent import strictjson
from felhom_agent.config._keys import (
    ENV_PREFIX,
    KEYS,
    KEYS_BY_ENV,
    KEYS_BY_PATH,
    SECTIONS,
    Key,
    Kind,
)
from felhom_agent.config._model import Config
from felhom_agent.config._validate import build_config
from felhom_agent.errors import ConfigError
from felhom_agent.secret import REDACTED, Secret

__all__ = ["DEFAULT_CONFIG_PATH", "load_config", "parse_env_value"]

DEFAULT_CONFIG_PATH = Path("/etc/felhom-agent/config.json")

#: systemd credential names (``LoadCredential=NAME:PATH``) consulted for each secret key.
CREDENTIAL_NAMES: Mapping[str, str] = {
    "proxmox.token_secret": "proxmox_token_secret",
    "hub.token": "hub_token",
}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def load_config(path: Path | None = None, *, env: Mapping[str, str] | None = None) -> Config:
    """Load, overlay and validate the configuration.

    Args:
        path: the JSON file; ``None`` means :data:`DEFAULT_CONFIG_PATH`.
        env: the environment (default ``os.environ``), for the overlay and credentials.

    Raises:
        ConfigError: anything wrong, with the key and an operator-actionable message.
    """
    environ = os.environ if env is None else env
    file_path = DEFAULT_CONFIG_PATH if path is None else path
    document = _read_document(file_path)
    raw = _flatten(document, file_path)
    _refuse_exposed_secrets(file_path, raw)
    raw.update(_env_overlay(environ))
    _resolve_secrets(raw, environ)
    return build_config(raw, source=file_path)


def _read_document(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} does not exist; create it or pass --config PATH", key="--config"
        ) from None
    except OSError as err:
        raise ConfigError(
            f"config file {path} cannot be read: {err.strerror}", key="--config"
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"config file {path} is not UTF-8 (byte {err.start}); save it as UTF-8 JSON",
            key="--config",
        ) from None
    try:
        document = strictjson.loads(text)
    except strictjson.DuplicateMember as dup:
        raise ConfigError(
            f"config file {path}: key {dup.key!r} appears twice in one object; keep one",
            key=dup.key,
        ) from None
    except strictjson.JsonSyntaxError as err:
        raise ConfigError(
            f"config file {path}: invalid JSON at line {err.lineno}, column {err.colno}: "
            f"{err.msg} (the file is strict JSON: no comments, no trailing commas)",
            key="--config",
        ) from None
    except strictjson.StrictJsonError as err:
        raise ConfigError(
            f"config file {path}: invalid JSON: {err} (the file is strict JSON: no NaN or "
            "Infinity)",
            key="--config",
        ) from None
    if not isinstance(document, dict):
        raise ConfigError(
            f"config file {path}: the top level must be a JSON object, not "
            f"{_json_type(document)}",
            key="--config",
        )
    return document


def _flatten(document: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """Walk the JSON object into ``{dotted key: raw value}``, refusing unknown keys."""
    flat: dict[str, Any] = {}

    def walk(obj: Mapping[str, Any], prefix: tuple[str, ...]) -> None:
        for name, value in obj.items():
            here = (*prefix, name)
            dotted = ".".join(here)
            if here in KEYS_BY_PATH:
                key = KEYS_BY_PATH[here]
                flat[key.dotted] = _check_json_type(key, value)
            elif here in SECTIONS:
                if not isinstance(value, dict):
                    raise ConfigError(
                        f"{dotted}: must be a JSON object (a section), not "
                        f"{_json_type(value)}",
                        key=dotted,
                    )
                walk(value, here)
            else:
                raise ConfigError(
                    f"config file {path}: unknown key {dotted!r}{_suggest(dotted)}; "
                    "see the configuration reference in the README",
                    key=dotted,
                )

    walk(document, ())
    return flat


def _suggest(dotted: str) -> str:
    known = [key.dotted for key in KEYS] + [".".join(s) for s in SECTIONS]
    close = difflib.get_close_matches(dotted, known, n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _show(key: Key, value: object) -> str:
    if key.secret and value is not None:
        return REDACTED
    return json.dumps(value) if not isinstance(value, Secret) else REDACTED


def _check_json_type(key: Key, value: object) -> object:
    """Check a JSON value against the key's kind; secrets come back wrapped."""
    if value is None:
        if key.nullable:
            return None
        raise ConfigError(
            f"{key.dotted}: null is not allowed; must be {key.allowed()}", key=key.dotted
        )
    ok: bool
    if key.kind is Kind.INT:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif key.kind is Kind.NUMBER:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif key.kind is Kind.BOOL:
        ok = isinstance(value, bool)
    elif key.kind is Kind.LIST:
        ok = isinstance(value, list)
    else:
        ok = isinstance(value, str)
    if not ok:
        raise ConfigError(
            f"{key.dotted}: {_show(key, value)} ({_json_type(value)}) is not allowed; "
            f"must be {key.allowed()}",
            key=key.dotted,
        )
    if key.secret:
        return Secret(str(value))
    return value


def parse_env_value(key: Key, text: str) -> object:
    """Parse one environment string to the key's type (``null`` unsets a nullable key)."""
    if text == "null" and key.nullable:
        return None
    if key.kind is Kind.SECRET:
        return Secret(text)
    if key.kind is Kind.LIST:
        try:
            value = strictjson.loads(text)
        except strictjson.StrictJsonError:
            value = None
        if isinstance(value, list):
            return value
    if key.kind is Kind.INT:
        try:
            return int(text.strip(), 10)
        except ValueError:
            pass
    elif key.kind is Kind.NUMBER:
        try:
            number = float(text.strip())
        except ValueError:
            pass
        else:
            if math.isfinite(number):
                return int(number) if number.is_integer() and "." not in text else number
    elif key.kind is Kind.BOOL:
        word = text.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    else:
        return text
    raise ConfigError(
        f"{key.env}: {text!r} is not allowed for {key.dotted}; must be {key.allowed()}",
        key=key.env,
    )


def _env_overlay(environ: Mapping[str, str]) -> dict[str, Any]:
    overlay: dict[str, Any] = {}
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX):
            continue
        key = KEYS_BY_ENV.get(name)
        if key is None:
            close = difflib.get_close_matches(name, list(KEYS_BY_ENV), n=1, cutoff=0.8)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(
                f"unknown environment variable {name}{hint}; every FELHOM_AGENT_* variable "
                "must name a config key (see the README), so a typo cannot silently do nothing",
                key=name,
            )
        overlay[key.dotted] = parse_env_value(key, environ[name])
    return overlay


def _refuse_exposed_secrets(path: Path, raw: Mapping[str, Any]) -> None:
    """Like sshd with key files: a secret in a group/other-accessible file is refused."""
    inline = [dotted for dotted in CREDENTIAL_NAMES if raw.get(dotted) is not None]
    if not inline:
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(
            f"config file {path} holds {', '.join(inline)} but is accessible by group/other "
            f"(mode {mode:04o}); run `chmod 600 {path}` (and chown it to the agent's user), or "
            "move the secret to a *_file key or a systemd credential",
            key=inline[0],
        )


def read_secret_file(dotted: str, path: Path) -> Secret:
    """Read a secret from a file that only its owner may read; one trailing newline is cut."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(
            f"{dotted}: cannot read secret file {path}: {err.strerror}", key=dotted
        ) from None
    if mode & 0o077:
        raise ConfigError(
            f"{dotted}: secret file {path} is accessible by group/other (mode {mode:04o}); "
            f"run `chmod 600 {path}`",
            key=dotted,
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{dotted}: secret file {path} is not UTF-8 text", key=dotted) from None
    return Secret(text.removesuffix("\n").removesuffix("\r"))


def _resolve_secrets(raw: dict[str, Any], environ: Mapping[str, str]) -> None:
    """Fill each secret from its value, its ``*_file`` key, or a systemd credential."""
    creds = environ.get("CREDENTIALS_DIRECTORY")
    for dotted, cred_name in CREDENTIAL_NAMES.items():
        file_key = dotted + "_file"
        inline = raw.get(dotted)
        file_path = raw.get(file_key)
        if inline is not None and file_path is not None:
            raise ConfigError(
                f"{dotted} and {file_key} are both set; set only one of them", key=dotted
            )
        if file_path is not None:
            raw[dotted] = read_secret_file(file_key, Path(file_path))
        elif inline is None and creds:
            candidate = Path(creds) / cred_name
            if candidate.exists():
                raw[dotted] = read_secret_file(f"credential {cred_name}", candidate)
