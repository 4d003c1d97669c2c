"""Where the client finds the server and its key: flags (the caller's arguments), then the
``STRATA_URL`` / ``STRATA_API_KEY`` / ``STRATA_MODEL`` variables, then a config file, then — for a
server on this machine — the admin key that ``make run`` wrote to ``var/api-keys.txt``.

The config file is TOML: ``$STRATA_CONFIG``, else ``$XDG_CONFIG_HOME/strata/client.toml`` (default
``~/.config/strata/client.toml``)::

    url = "https://strata.example.com"
    api_key = "strata_..."
    model = "north"          # the model commands act on when --model is left out
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from services.auth import KEYS_FILE_NAME
from services.errors import InvalidInput

DEFAULT_URL = "http://127.0.0.1:8000"
FILE_KEYS = ("url", "api_key", "model")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class ClientConfigError(InvalidInput):
    """The client's configuration is unusable; the message names the variable, file or key."""


@dataclass(frozen=True)
class ClientConfig:
    url: str = DEFAULT_URL
    api_key: str | None = None
    model: str | None = None
    key_source: str = "none"  # where the key came from, for messages ("STRATA_API_KEY", a path...)


def config_path() -> Path:
    if explicit := os.environ.get("STRATA_CONFIG"):
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "strata" / "client.toml"


def load_config(url: str | None = None, api_key: str | None = None, model: str | None = None) -> ClientConfig:
    """The configuration, each value from the first place that sets it (see the module's doc)."""
    file = _read_file(config_path())
    url = url or os.environ.get("STRATA_URL") or file.get("url") or DEFAULT_URL
    _check_url(url)
    model = model or os.environ.get("STRATA_MODEL") or file.get("model")
    if api_key:
        source = "--api-key"
    elif api_key := os.environ.get("STRATA_API_KEY"):
        source = "STRATA_API_KEY"
    elif api_key := file.get("api_key"):
        source = str(config_path())
    else:
        api_key, source = _local_admin_key(url)
    return ClientConfig(url=url.rstrip("/"), api_key=api_key, model=model, key_source=source)


def _read_file(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ClientConfigError(f"config file {path}: not valid TOML ({err})") from None
    unknown = sorted(set(data) - set(FILE_KEYS))
    if unknown:
        raise ClientConfigError(f"config file {path}: unknown key(s) {', '.join(unknown)}; "
                                f"known: {', '.join(FILE_KEYS)}")
    bad = [k for k, v in data.items() if not isinstance(v, str)]
    if bad:
        raise ClientConfigError(f"config file {path}: {', '.join(bad)} must be a string")
    return data


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ClientConfigError(f"server URL {url!r} must look like http://host:port (STRATA_URL, --url or the "
                                "config file's url)")


def _local_admin_key(url: str) -> tuple[str | None, str]:
    """The admin key ``make run`` generated, when the server is on this machine and was started
    from this directory (or ``STRATA_DATA_DIR``): what lets ``strata demo`` work with no set-up."""
    if urlsplit(url).hostname not in LOOPBACK:
        return None, "none"
    path = Path(os.environ.get("STRATA_DATA_DIR", "var")) / KEYS_FILE_NAME
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None, "none"
    for line in lines:
        if line.startswith("STRATA_ADMIN_KEY="):
            return line.split("=", 1)[1].strip() or None, str(path)
    return None, "none"
