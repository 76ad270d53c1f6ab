"""Token/URL precedence and the ~/.mags/config.json file."""

from __future__ import annotations

import json
import stat

import httpx
import pytest

from mags import Mags
from mags.errors import ConfigError
from mags.sdk.credentials import (
    DEFAULT_API_URL,
    config_path,
    load_config,
    normalize_api_url,
    resolve_credentials,
    save_config,
)


def write_config(home, data):
    path = home / ".mags" / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_defaults_without_anything():
    creds = resolve_credentials()
    assert creds.api_url == DEFAULT_API_URL == "http://127.0.0.1:8090"
    assert creds.api_token is None


def test_config_file_is_read(isolated_home):
    write_config(isolated_home, {"api_url": "http://cfg:1", "api_token": "cfg-token"})
    creds = resolve_credentials()
    assert (creds.api_url, creds.api_token) == ("http://cfg:1", "cfg-token")
    assert creds.token_source == str(config_path())


def test_legacy_token_key(isolated_home):
    write_config(isolated_home, {"token": "old"})
    assert resolve_credentials().api_token == "old"


def test_env_beats_config_and_argument_beats_env(isolated_home, monkeypatch):
    write_config(isolated_home, {"api_url": "http://cfg:1", "api_token": "cfg-token"})
    monkeypatch.setenv("MAGS_API_TOKEN", "env-token")
    monkeypatch.setenv("MAGS_API_URL", "http://env:2/api/v1/")
    creds = resolve_credentials()
    assert (creds.api_url, creds.api_token, creds.token_source) == (
        "http://env:2",
        "env-token",
        "MAGS_API_TOKEN",
    )
    creds = resolve_credentials(api_token="arg", api_url="http://arg:3")
    assert (creds.api_url, creds.api_token) == ("http://arg:3", "arg")


def test_mags_token_env_is_a_fallback(monkeypatch):
    monkeypatch.setenv("MAGS_TOKEN", "t2")
    assert resolve_credentials().api_token == "t2"
    monkeypatch.setenv("MAGS_API_TOKEN", "t1")
    assert resolve_credentials().api_token == "t1"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://api.example.com", "https://api.example.com"),
        ("https://api.example.com/", "https://api.example.com"),
        ("https://api.example.com/api/v1", "https://api.example.com"),
        ("localhost:8090", "http://localhost:8090"),
    ],
)
def test_normalize_api_url(given, expected):
    assert normalize_api_url(given) == expected


def test_save_config_is_private(isolated_home):
    path = save_config({"api_url": "http://x", "api_token": "secret"})
    assert path == isolated_home / ".mags" / "config.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_config() == {"api_url": "http://x", "api_token": "secret"}


def test_corrupt_config_only_matters_when_needed(isolated_home, monkeypatch):
    (isolated_home / ".mags").mkdir()
    (isolated_home / ".mags" / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        resolve_credentials()
    monkeypatch.setenv("MAGS_API_TOKEN", "t")
    monkeypatch.setenv("MAGS_API_URL", "http://h")
    assert resolve_credentials().api_token == "t"


def test_client_sends_bearer_token_to_api_v1(isolated_home, monkeypatch):
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"jobs": [], "total": 0, "page": 1, "page_size": 20})

    write_config(isolated_home, {"api_url": "http://cfg:9", "api_token": "cfg-token"})
    monkeypatch.setenv("MAGS_API_TOKEN", "env-token")
    with Mags(transport=httpx.MockTransport(handler)) as m:
        m.list_jobs()
    assert str(seen[0].url) == "http://cfg:9/api/v1/mags-jobs?page=1&page_size=20"
    assert seen[0].headers["authorization"] == "Bearer env-token"
