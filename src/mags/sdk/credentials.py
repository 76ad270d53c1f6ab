"""Where the SDK and CLI find the server URL and API token.

Precedence (first wins):

* token: explicit argument, ``MAGS_API_TOKEN``, ``MAGS_TOKEN`` (older SDKs read it),
  ``~/.mags/config.json`` key ``api_token`` (or ``token``, written by older CLIs);
* URL: explicit argument, ``MAGS_API_URL``, config file ``api_url``, ``http://127.0.0.1:8090``.

The config file is only read when an argument or variable does not already answer, so a
broken file never gets in the way of ``MAGS_API_TOKEN`` users.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mags.errors import ConfigError

DEFAULT_API_URL = "http://127.0.0.1:8090"
TOKEN_ENV_VARS = ("MAGS_API_TOKEN", "MAGS_TOKEN")
URL_ENV_VAR = "MAGS_API_URL"


def config_path() -> Path:
    """``~/.mags/config.json`` (``HOME`` is honoured, so tests and sudo users get theirs)."""
    home = os.environ.get("HOME") or str(Path.home())
    return Path(home) / ".mags" / "config.json"


def load_config(path: Path | None = None) -> dict[str, Any]:
    """Read the config file; a missing file is an empty config, a corrupt one a ConfigError."""
    path = path or config_path()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc.msg}); fix or delete it") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    return data


def save_config(data: dict[str, Any], path: Path | None = None) -> Path:
    """Write the config atomically: directory 0700, file 0600 (it holds a secret)."""
    path = path or config_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    fd, tmp = tempfile.mkstemp(prefix=".config-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def normalize_api_url(url: str) -> str:
    """Accept ``https://host``, ``https://host/`` and ``https://host/api/v1``; return the first."""
    url = url.strip().rstrip("/")
    url = url.removesuffix("/api/v1")
    if "://" not in url:
        url = "http://" + url
    return url


@dataclass(frozen=True)
class Credentials:
    """The resolved server URL and token, and where each came from (for ``whoami``)."""

    api_url: str
    api_token: str | None
    url_source: str
    token_source: str | None


def resolve_credentials(api_token: str | None = None, api_url: str | None = None) -> Credentials:
    """Apply the precedence rules of this module."""
    token, token_source = api_token, "argument" if api_token else None
    if not token:
        for var in TOKEN_ENV_VARS:
            if os.environ.get(var):
                token, token_source = os.environ[var], var
                break
    url, url_source = api_url, "argument" if api_url else None
    if not url and os.environ.get(URL_ENV_VAR):
        url, url_source = os.environ[URL_ENV_VAR], URL_ENV_VAR
    if not token or not url:
        config = load_config()
        source = str(config_path())
        if not token:
            token = config.get("api_token") or config.get("token") or None
            token_source = source if token else None
        if not url and config.get("api_url"):
            url, url_source = str(config["api_url"]), source
    if not url:
        url, url_source = DEFAULT_API_URL, "default"
    return Credentials(normalize_api_url(url), token, url_source or "default", token_source)
