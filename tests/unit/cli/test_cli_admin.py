"""login/logout/whoami, tokens, workspaces, cron, server, image, setup-claude, browser."""

from __future__ import annotations

import json
import stat
import sys
import types

import pytest

from mags.config import Settings

WHO = {"user": "alice", "admin": True, "token_name": "laptop"}


def config_of(home):
    return json.loads((home / ".mags" / "config.json").read_text())


def test_login_verifies_and_saves(mags, api, isolated_home, monkeypatch):
    monkeypatch.delenv("MAGS_API_TOKEN")
    api.on("GET", "/whoami", WHO)
    result = mags("login", "--token", "tok-1", "--url", "http://srv:8090/")
    assert result.exit_code == 0, result.output
    assert "Logged in to http://srv:8090 as alice (admin)" in result.stdout
    assert api.requests[0].headers["authorization"] == "Bearer tok-1"
    assert str(api.requests[0].url) == "http://srv:8090/api/v1/whoami"
    path = isolated_home / ".mags" / "config.json"
    assert config_of(isolated_home) == {"api_url": "http://srv:8090", "api_token": "tok-1"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_login_prompts_for_the_token(mags, api, isolated_home):
    api.on("GET", "/whoami", WHO)
    result = mags("login", input="pasted-token\n")
    assert result.exit_code == 0, result.output
    assert config_of(isolated_home)["api_token"] == "pasted-token"
    assert config_of(isolated_home)["api_url"] == "http://mags.test"
    assert "pasted-token" not in result.output


def test_login_with_a_bad_token_saves_nothing(mags, api, isolated_home):
    api.on("GET", "/whoami", (401, {"error": "invalid token"}))
    result = mags("login", "--token", "bad")
    assert result.exit_code == 4 and result.stderr.endswith("error: invalid token\n")
    assert not (isolated_home / ".mags" / "config.json").exists()


def test_logout_keeps_the_url(mags, isolated_home):
    (isolated_home / ".mags").mkdir()
    (isolated_home / ".mags" / "config.json").write_text(
        json.dumps({"api_url": "http://x", "api_token": "t", "token": "old"})
    )
    result = mags("logout")
    assert result.exit_code == 0 and "Logged out" in result.stdout
    assert config_of(isolated_home) == {"api_url": "http://x"}
    assert mags("logout").stdout == "Not logged in.\n"


def test_whoami(mags, api, monkeypatch):
    api.on("GET", "/whoami", WHO)
    result = mags("whoami")
    assert result.exit_code == 0
    assert "alice (admin)" in result.stdout and "http://mags.test" in result.stdout
    assert "MAGS_API_TOKEN" in result.stdout
    assert json.loads(mags("whoami", "--json").stdout)["server"] == "http://mags.test"
    monkeypatch.delenv("MAGS_API_TOKEN")
    result = mags("whoami")
    assert result.exit_code == 4 and "not logged in" in result.stderr


def test_tokens(mags, api):
    api.on("POST", "/tokens", {"id": "3", "name": "ci", "user": "bob", "token": "s3cr3t", "created_at": "x"})
    api.on(
        "GET",
        "/tokens",
        {
            "tokens": [
                {
                    "id": "3",
                    "name": "ci",
                    "user": "bob",
                    "created_at": None,
                    "last_used_at": None,
                    "revoked": True,
                }
            ]
        },
    )
    api.on("DELETE", "/tokens/3", {"success": True})
    result = mags("token", "create", "--name", "ci", "--user", "bob", "--admin")
    assert result.stdout == "s3cr3t\n" and "not shown again" in result.stderr
    assert api.body(api.requests[0]) == {"name": "ci", "user": "bob", "admin": True}
    listed = mags("token", "list").stdout
    assert "bob" in listed and "never" in listed and "yes" in listed
    assert mags("token", "revoke", "3").stdout == "Revoked token 3\n"
    assert json.loads(mags("token", "create", "--json").stdout)["token"] == "s3cr3t"


def test_workspaces(mags, api):
    api.on(
        "GET",
        "/mags-workspaces",
        {"workspaces": [{"workspace_id": "proj", "persistent": True, "size_bytes": 2048}], "total": 1},
    )
    api.on("DELETE", "/mags-workspaces/proj", {"success": True})
    listed = mags("workspace", "list").stdout
    assert "proj" in listed and "2.0 KB" in listed
    assert mags("workspace", "delete", "proj").stdout == "Deleted workspace proj\n"
    api.on("DELETE", "/mags-workspaces/busy", (409, {"error": "workspace busy is used by a running job"}))
    result = mags("workspace", "delete", "--yes", "busy")
    assert result.exit_code == 1 and "used by a running job" in result.stderr


def test_cron(mags, api):
    api.on("POST", "/mags-cron", {"id": "c1", "name": "backup", "next_run_at": "2030-01-01T00:00:00Z"})
    api.on(
        "GET",
        "/mags-cron",
        {"cron_jobs": [{"id": "c1", "name": "backup", "cron_expression": "0 0 * * *", "enabled": True}]},
    )
    api.on("PATCH", "/mags-cron/c1", {"id": "c1"})
    api.on("DELETE", "/mags-cron/c1", {"success": True})
    result = mags(
        "cron",
        "add",
        "-n",
        "backup",
        "-s",
        "0 0 * * *",
        "-w",
        "backups",
        "-p",
        "tar",
        "czf",
        "b.tgz",
        "/data",
    )
    assert result.exit_code == 0 and "Created cron job c1" in result.stdout
    assert api.body(api.requests[0]) == {
        "name": "backup",
        "cron_expression": "0 0 * * *",
        "script": "tar czf b.tgz /data",
        "workspace_id": "backups",
        "persistent": True,
    }
    assert "0 0 * * *" in mags("cron", "list").stdout
    mags("cron", "disable", "c1")
    mags("cron", "enable", "c1")
    assert [api.body(r) for r in api.calls("PATCH", "/mags-cron/c1")] == [
        {"enabled": False},
        {"enabled": True},
    ]
    assert mags("cron", "remove", "c1").stdout == "Removed cron job c1\n"
    assert mags("cron", "add", "-n", "x", "-s", "daily", "true").exit_code == 1  # not 5 fields
    assert mags("cron", "add", "-s", "0 0 * * *", "true").exit_code == 2  # --name missing


@pytest.fixture
def fake_module(monkeypatch):
    def install(name, **attrs):
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, module)
        return module

    return install


def test_server_builds_settings_and_serves(mags, fake_module, tmp_path):
    seen = {}
    fake_module("mags.server", serve=lambda settings: seen.setdefault("settings", settings))
    cfg = tmp_path / "mags.toml"
    cfg.write_text('pool_size = 0\nhost = "10.0.0.1"\n')
    result = mags(
        "server",
        "--data-dir",
        str(tmp_path / "d"),
        "--port",
        "9999",
        "--runtime",
        "namespaces",
        "--config",
        str(cfg),
    )
    assert result.exit_code == 0, result.output
    settings = seen["settings"]
    assert isinstance(settings, Settings)
    assert (settings.port, settings.runtime, settings.host, settings.pool_size) == (
        9999,
        "namespaces",
        "10.0.0.1",
        0,
    )
    assert settings.data_dir == tmp_path / "d"
    assert mags("server", "--runtime", "docker").exit_code == 2


def test_server_bad_setting_is_one_line(mags, fake_module, tmp_path):
    fake_module("mags.server", serve=lambda settings: None)
    cfg = tmp_path / "bad.toml"
    cfg.write_text("pool_size = -1\n")
    result = mags("server", "--config", str(cfg))
    assert result.exit_code == 1 and result.stderr.startswith("error: bad setting pool_size")


def test_image_build(mags, fake_module):
    calls = []
    fake_module(
        "mags.runtime.image",
        build_image=lambda settings, name, force=False: (
            calls.append((name, force)) or "/var/lib/mags/images/x"
        ),
    )
    result = mags("image", "build", "--force")
    assert result.exit_code == 0 and "Image 'standard' is ready" in result.stdout
    assert calls == [("standard", True)]


def test_setup_claude(mags, isolated_home):
    result = mags("setup-claude")
    target = isolated_home / ".claude" / "commands" / "mags.md"
    assert result.exit_code == 0 and str(target) in result.stdout
    assert "$ARGUMENTS" in target.read_text() and "mags run" in target.read_text()
    assert mags("setup-claude", "--print").stdout == target.read_text()


def test_browser(mags, api, helpers):
    api.on(
        "GET",
        "/mags-jobs",
        helpers.listing(
            {"request_id": helpers.JOB, "name": "browser", "workspace_id": "browser", "status": "running"}
        ),
    )
    api.on("POST", f"/mags-jobs/{helpers.JOB}/exec", {"exit_code": 0, "stdout": "ok\n", "stderr": ""})
    api.on("POST", f"/mags-jobs/{helpers.JOB}/access", {"success": True, "url": "http://b.apps.test"})
    result = mags("browser")
    assert result.exit_code == 0, result.output
    assert "CDP URL: http://b.apps.test" in result.stdout
    assert (
        "--remote-debugging-port=9222"
        in api.body(api.calls("POST", f"/mags-jobs/{helpers.JOB}/exec")[0])["command"]
    )
    api.on(
        "POST",
        f"/mags-jobs/{helpers.JOB}/exec",
        {"exit_code": 127, "stdout": "", "stderr": "no Chromium in this sandbox"},
    )
    api.routes[("POST", f"/api/v1/mags-jobs/{helpers.JOB}/exec")].pop(0)
    result = mags("browser")
    assert result.exit_code == 1 and "no Chromium" in result.stderr
