"""Help, version, start-up cost, errors and exit codes, credential precedence."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from mags.cli.main import cli

CONTRACT_COMMANDS = [
    ["login"], ["logout"], ["whoami"], ["new"], ["run"], ["ssh"], ["exec"], ["list"], ["logs"],
    ["status"], ["stop"], ["sync"], ["resize"], ["url"], ["url", "alias"], ["set"],
    ["workspace", "list"], ["workspace", "delete"], ["cron", "add"], ["cron", "list"],
    ["cron", "remove"], ["cron", "enable"], ["cron", "disable"], ["browser"], ["setup-claude"],
    ["server"], ["token", "create"], ["token", "list"], ["token", "revoke"], ["image", "build"],
]  # fmt: skip


@pytest.mark.parametrize("command", CONTRACT_COMMANDS, ids=" ".join)
def test_every_command_has_help(command):
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.stdout
    assert (
        "Example" in result.stdout or command[0] in ("workspace", "cron", "token", "url") and len(command) > 1
    )


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.startswith("mags ")


def test_help_is_light():
    code = (
        "import sys\n"
        "from mags.cli.main import cli\n"
        "try:\n    cli(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(','.join(m for m in ('httpx', 'rich', 'fastapi', 'sqlalchemy', 'pydantic') if m in sys.modules),"
        " file=sys.stderr)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stderr.strip() == ""


def test_server_down_is_one_line_and_exit_3(mags, monkeypatch):
    monkeypatch.setenv("MAGS_API_URL", "http://127.0.0.1:1")
    result = mags("list", transport=None)
    assert result.exit_code == 3
    assert (
        result.stderr == "error: cannot reach mags server at http://127.0.0.1:1 — is `mags server` running?\n"
    )
    assert result.stdout == ""


@pytest.mark.parametrize(("status", "code"), [(401, 4), (403, 4), (404, 5), (409, 1), (500, 1), (400, 1)])
def test_api_errors_map_to_exit_codes(mags, api, status, code):
    api.on("GET", "/mags-jobs", (status, {"error": "the message"}))
    result = mags("list")
    assert result.exit_code == code
    assert result.stderr == "error: the message\n"
    assert "Traceback" not in result.output


def test_not_logged_in(mags, api, monkeypatch):
    monkeypatch.delenv("MAGS_API_TOKEN")
    api.on("GET", "/mags-jobs", (401, {"error": "missing token"}))
    result = mags("list")
    assert result.exit_code == 4
    assert "run `mags login` or set MAGS_API_TOKEN" in result.stderr
    assert "authorization" not in api.requests[0].headers


def test_usage_errors_exit_2(mags, api):
    assert mags("run", "-e", "-w", "x", "true").exit_code == 2
    assert mags("run", "--no-sleep", "true").exit_code == 2
    result = mags("run", "--url", "true")
    assert result.exit_code == 2 and "--url requires -p" in result.stderr
    assert mags("run", "-E", "NOEQUALS", "true").exit_code == 2
    assert mags("run", "-w", "a", "-n", "b", "true").exit_code == 2
    assert mags("set", "x").exit_code == 2
    assert mags("bogus").exit_code == 2
    assert api.requests == []


def test_env_token_wins_over_config_file(mags, api, isolated_home):
    (isolated_home / ".mags").mkdir()
    (isolated_home / ".mags" / "config.json").write_text(
        json.dumps({"api_url": "http://from-config", "api_token": "config-token"})
    )
    api.on("GET", "/mags-jobs", {"jobs": [], "total": 0})
    assert mags("list").exit_code == 0
    request = api.requests[-1]
    assert request.headers["authorization"] == "Bearer test-token"
    assert request.url.host == "mags.test"


def test_config_file_used_without_env(mags, api, isolated_home, monkeypatch):
    monkeypatch.delenv("MAGS_API_TOKEN")
    monkeypatch.delenv("MAGS_API_URL")
    (isolated_home / ".mags").mkdir()
    (isolated_home / ".mags" / "config.json").write_text(
        json.dumps({"api_url": "http://from-config:9", "api_token": "config-token"})
    )
    api.on("GET", "/mags-jobs", {"jobs": [], "total": 0})
    assert mags("list").exit_code == 0
    assert api.requests[-1].headers["authorization"] == "Bearer config-token"
    assert str(api.requests[-1].url).startswith("http://from-config:9/api/v1/mags-jobs")
