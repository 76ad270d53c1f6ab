"""``mags quota show|set``: per-user quotas (the API's /quotas)."""

from __future__ import annotations

STATE = {
    "user": "alice", "admin": False, "exempt": False,
    "limits": {"disk_gb": 50, "workspaces": 100, "sandboxes": None},
    "overrides": {"disk_gb": 50, "workspaces": None, "sandboxes": 0},
    "usage": {"disk_gb": 12, "workspaces": 3, "sandboxes": 1},
}  # fmt: skip


def test_quota_show(mags, api):
    api.on("GET", "/quotas", STATE).on("GET", "/quotas/alice", STATE)
    result = mags("quota", "show")
    assert result.exit_code == 0, result.output
    lines = [line.split() for line in result.stdout.splitlines() if line.strip()]
    assert ["DISK", "GB", "50", "12", "set", "for", "this", "user"] in lines
    assert ["WORKSPACES", "100", "3", "server", "default"] in lines
    assert ["SANDBOXES", "unlimited", "1", "set", "for", "this", "user"] in lines
    assert "Quotas of alice:" in result.stderr
    result = mags("quota", "show", "alice", "--json")
    assert result.exit_code == 0 and '"disk_gb": 50' in result.stdout
    assert [r.url.path for r in api.requests] == ["/api/v1/quotas", "/api/v1/quotas/alice"]


def test_quota_set(mags, api):
    api.on("PATCH", "/quotas/alice", STATE)
    result = mags("quota", "set", "alice", "--disk-gb", "50", "--sandboxes", "unlimited", "--workspaces", "default")
    assert result.exit_code == 0, result.output
    assert api.body(api.calls("PATCH", "/quotas/alice")[0]) == {"disk_gb": 50, "workspaces": None, "sandboxes": 0}
    result = mags("quota", "set", "alice", "--sandboxes", "lots")
    assert result.exit_code == 2 and "'lots' is not a number, 'unlimited' or 'default'" in result.stderr
    result = mags("quota", "set", "alice")
    assert result.exit_code == 2 and "give at least one of" in result.stderr


def test_quota_errors_map_to_exit_codes(mags, api):
    api.on("PATCH", "/quotas/bob", (403, {"error": "only an admin can change quotas"}))
    result = mags("quota", "set", "bob", "--disk-gb", "1")
    assert result.exit_code == 4 and "only an admin can change quotas" in result.stderr
