"""Wake on request and URL aliases through a real `mags server` (short idle timeout)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from mags import Mags
from tests.integration.proxy.apps import curl, wait_http
from tests.integration.server_fixture import ServerProc, free_port

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (sandboxes)")
IDLE_S = 4


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    base = tmp_path_factory.mktemp("proxy-wake")
    env = {"MAGS_PROXY_PORT": str(free_port()), "MAGS_SSH_PORT": "0", "MAGS_IDLE_TIMEOUT_S": str(IDLE_S)}
    srv = ServerProc(base / "data", base / "home", free_port(), "namespaces", extra_env=env).start()
    yield srv
    srv.stop(signal.SIGKILL)


@pytest.fixture(scope="module")
def proxy_port(server: ServerProc) -> int:
    return int(server.extra_env["MAGS_PROXY_PORT"])


@pytest.fixture(scope="module")
def m(server: ServerProc) -> Iterator[Mags]:
    with Mags(api_token=server.admin_token, api_url=server.url) as client:
        yield client


def serve(text: str) -> str:
    return f"mkdir -p /srv/www && echo {text} > /srv/www/index.html && cd /srv/www && exec python3 -m http.server 8080"


def start(m: Mags, workspace: str, text: str) -> str:
    job = m.run(serve(text), workspace_id=workspace, persistent=True,
                startup_command="cd /srv/www && python3 -m http.server 8080")  # fmt: skip
    rid = str(job["request_id"])
    wait_status(m, rid, "vm_status", "running")
    return rid


def wait_status(m: Mags, rid: str, field: str, wanted: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = m.status(rid)
        if st[field] == wanted:
            return st
        time.sleep(0.2)
    raise AssertionError(f"{field} never became {wanted}: {m.status(rid)}")


def test_a_request_wakes_a_sleeping_sandbox(m: Mags) -> None:
    rid = start(m, "sleepy", "awake-again")
    url = m.url(rid, port=8080)["url"]
    wait_http(url + "/")
    wait_status(m, rid, "vm_status", "sleeping", timeout=IDLE_S * 8)  # idle: no traffic
    t = time.monotonic()
    r = curl("-i", url + "/index.html")
    took = time.monotonic() - t
    assert r.stdout.startswith("HTTP/1.0 200") and "awake-again" in r.stdout, r.stdout[:500]
    assert took < 30
    assert m.status(rid)["vm_status"] == "running"
    # steady traffic counts as activity: the sandbox stays awake past the idle timeout
    until = time.monotonic() + IDLE_S * 2.5
    while time.monotonic() < until:
        assert curl("-o", "/dev/null", "-w", "%{http_code}", url + "/").stdout == "200"
        time.sleep(0.5)
    assert m.status(rid)["vm_status"] == "running"
    assert any("woken" in (h["reason"] or "") for h in m.status(rid)["history"]), m.status(rid)["history"]
    print(f"first response after wake: {took:.2f} s")
    m.stop(rid)


def test_alias_follows_its_workspace_and_names_are_per_tenant(m: Mags, server: ServerProc, proxy_port: int) -> None:
    first = start(m, "site", "first-job")
    m.url(first, port=8080)
    r = server.cli("url", "alias", "My-Site", "site")
    assert r.returncode == 0, r.stderr
    alias_url = f"http://my-site.localhost:{proxy_port}"
    assert r.stdout.strip() == alias_url
    wait_http(alias_url + "/")
    assert "first-job" in curl(alias_url + "/").stdout
    listed = server.cli("url", "alias", "list")
    assert "my-site" in listed.stdout and "site" in listed.stdout

    # another tenant cannot take or remove the name
    bob = server.create_user_token("bob")
    with Mags(api_token=bob, api_url=server.url) as b:
        b.run("sleep infinity", workspace_id="site", persistent=True)
    r = server.cli("url", "alias", "my-site", "site", token=bob)
    assert r.returncode != 0 and "taken" in (r.stderr + r.stdout)
    r = server.cli("url", "alias", "remove", "my-site", token=bob)
    assert r.returncode != 0 and "not found" in (r.stderr + r.stdout)

    # the workspace gets a new job: the alias follows it
    m.stop(first)
    r = curl("-i", alias_url + "/")
    assert r.stdout.startswith("HTTP/1.1 410") or r.stdout.startswith("HTTP/1.1 404"), r.stdout[:300]
    second = start(m, "site", "second-job")
    deadline = time.monotonic() + 30
    while "second-job" not in curl(alias_url + "/").stdout:
        assert time.monotonic() < deadline, curl("-i", alias_url + "/").stdout[:500]
        time.sleep(0.3)
    r = server.cli("url", "alias", "remove", "my-site")
    assert r.returncode == 0, r.stderr
    assert curl("-i", alias_url + "/").stdout.startswith("HTTP/1.1 404")
    m.stop(second)
