"""Existing Mags scripts and SDK code, unchanged, against a real ``mags server`` (namespaces).

Each test is a snippet of the hosted service's docs or of what the published SDK sends:
an alias made with the SDK's default domain, the fork example followed at once by
``mags workspace delete``, ``run(persistent=True)`` then at once SSH access, and
``mags run --timeout``.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mags import Mags
from tests.integration.proxy.apps import curl, wait_http
from tests.integration.server_fixture import ServerProc, free_port
from tests.integration.ssh.helpers import Access, missing_binaries

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (sandboxes)")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    base = tmp_path_factory.mktemp("compat")
    env = {
        "MAGS_PROXY_PORT": str(free_port()),
        "MAGS_SSH_PORT": str(free_port()),
        "MAGS_APPS_DOMAINS": "localhost,apps.mags.test",
        "MAGS_OBJECT_STORE_DIR": str(base / "objects"),
    }
    srv = ServerProc(base / "data", base / "home", free_port(), "namespaces", extra_env=env).start()
    yield srv
    srv.stop(signal.SIGKILL)


@pytest.fixture(scope="module")
def m(server: ServerProc) -> Iterator[Mags]:
    with Mags(api_token=server.admin_token, api_url=server.url) as client:
        yield client


def post(server: ServerProc, path: str, body: dict) -> httpx.Response:
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    return httpx.post(f"{server.url}/api/v1{path}", headers=headers, json=body, timeout=60)


def wait_vm(m: Mags, rid: str, wanted: str = "running", timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = m.status(rid)
        if st["vm_status"] == wanted:
            return st
        time.sleep(0.1)
    raise AssertionError(f"vm_status never became {wanted}: {m.status(rid)}")


def test_alias_made_with_the_sdks_default_domain_serves_the_sandbox(m: Mags, server: ServerProc) -> None:
    page = "mkdir -p /w && echo compat-alias-ok > /w/index.html && cd /w"
    job = m.run(f"{page} && exec python3 -m http.server 8080", workspace_id="site", persistent=True)
    # exactly what magpie-mags' url_alias_create("compat-site", "site") posts
    sdk_body = {"subdomain": "compat-site", "workspace_id": "site", "domain": "apps.magpiecloud.com"}
    r = post(server, "/mags-url-aliases", sdk_body)
    assert r.status_code == 200, r.text
    proxy_port = server.extra_env["MAGS_PROXY_PORT"]
    url = r.json()["url"]
    assert url == f"http://compat-site.localhost:{proxy_port}" and r.json()["domain"] == "localhost"
    wait_http(url + "/")  # the app starts listening a moment after the sandbox
    assert curl(url + "/index.html").stdout.strip() == "compat-alias-ok"
    # every served domain routes the same names
    other = curl("-H", "Host: compat-site.apps.mags.test", f"http://127.0.0.1:{proxy_port}/index.html")
    assert other.stdout.strip() == "compat-alias-ok", other.stdout[:300]
    r = post(
        server,
        "/mags-url-aliases",
        {"subdomain": "elsewhere", "workspace_id": "site", "domain": "example.org"},
    )
    assert r.status_code == 400 and r.json()["code"] == "domain_not_served"
    assert "localhost, apps.mags.test" in r.json()["error"]
    m.stop(job["request_id"])


def test_the_fork_example_then_workspace_delete_at_once(m: Mags, server: ServerProc) -> None:
    def ok(*args: str) -> str:
        r = server.cli(*args)
        assert r.returncode == 0, (args, r.stdout, r.stderr)
        return r.stdout

    ok("run", "-w", "golden", "-p", "echo gold > /root/g.txt")
    ok("sync", "golden")
    assert ok("run", "--base", "golden", "-w", "fork-1", "-p", "cat /root/g.txt").strip() == "gold"
    t = time.monotonic()
    assert ok("workspace", "delete", "fork-1").strip() == "Deleted workspace fork-1"
    print(f"delete of fork-1 right after its run: {time.monotonic() - t:.2f} s")
    assert "fork-1" not in [w["workspace_id"] for w in m.list_workspaces()["workspaces"]]
    fork_job = m.find_job("fork-1")
    assert fork_job is not None and fork_job["vm_status"] == "stopped"

    # a local workspace right after its script: the sandbox is still being torn down
    assert ok("run", "-w", "scratch", "echo hi").strip() == "hi"
    assert ok("workspace", "delete", "scratch").strip() == "Deleted workspace scratch"

    # a script still running: one readable line and a non-zero exit; --force stops it
    rid = ok("run", "--no-wait", "-w", "busy", "sleep 300").strip()
    wait_vm(m, rid)
    r = server.cli("workspace", "delete", "busy")
    assert r.returncode != 0 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and f"job {rid} is still running its script" in r.stderr, r.stderr
    assert ok("workspace", "delete", "--force", "busy").strip() == "Deleted workspace busy"
    assert m.status(rid)["vm_status"] == "stopped"
    ok("workspace", "delete", "golden")  # its idle VM is stopped first


@pytest.mark.skipif(bool(missing_binaries()), reason=f"OpenSSH client tools missing: {missing_binaries()}")
def test_persistent_run_then_ssh_access_at_once(m: Mags, tmp_path: Path) -> None:
    # the docs: job = run('sleep 3600', workspace_id='dev', persistent=True)
    #           enable_access(job.request_id, 22)
    job = m.run("sleep 3600", workspace_id="dev", persistent=True)
    t = time.monotonic()
    access = m.enable_access(job["request_id"], port=22)
    print(f"enable_access(22) right after run: {time.monotonic() - t:.2f} s")
    tmp_path.chmod(0o700)
    box = Access(access, tmp_path, "dev")
    r = box.ssh("hostname; echo $HOME")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().split() == ["mags-vm", "/root"]
    m.stop(job["request_id"])


def test_run_timeout_ends_the_job_with_an_error(m: Mags, server: ServerProc) -> None:
    t = time.monotonic()
    r = server.cli("run", "--timeout", "2", "sleep 30")
    took = time.monotonic() - t
    assert r.returncode != 0 and "timed out after 2 s" in r.stderr, (r.returncode, r.stderr)
    assert took < 15, took
    job = m.list_jobs(page_size=1)["jobs"][0]
    assert (
        job["status"] == "error" and job["error_message"] == "timed out after 2 s" and job["timeout_s"] == 2
    )
