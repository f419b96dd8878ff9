"""local.settings.json, read the way Core Tools reads it: `Values` become environment variables
unless the real environment already sets them (the environment wins)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import MutableMapping

from devhost.errors import HostError

FILE_NAME = "local.settings.json"


def read_local_settings(app_dir: str | Path) -> dict:
    """The parsed file, or {} when the app folder has none."""
    path = Path(app_dir) / FILE_NAME
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as exc:
        raise HostError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise HostError(f"{path}: expected a JSON object")
    if data.get("IsEncrypted"):
        raise HostError(f"{path}: IsEncrypted is true; devhost cannot decrypt it (set it to false)")
    values = data.get("Values", {})
    if not isinstance(values, dict):
        raise HostError(f"{path}: Values must be an object of strings")
    for name, value in values.items():
        if not isinstance(value, str):
            raise HostError(f"{path}: Values.{name} must be a string, got {type(value).__name__}")
    return data


def apply_local_settings(app_dir: str | Path, environ: MutableMapping[str, str]) -> list[str]:
    """Copy `Values` into `environ` where it has no such name; return the names that were set."""
    values = read_local_settings(app_dir).get("Values", {})
    applied = [name for name in values if name not in environ]
    for name in applied:
        environ[name] = values[name]
    return applied


def local_http_port(app_dir: str | Path) -> int | None:
    """`Host.LocalHttpPort` from the file, if set (Core Tools uses it as the default port)."""
    port = read_local_settings(app_dir).get("Host", {}).get("LocalHttpPort")
    return int(port) if port not in (None, "") else None
