"""`mags server` as a real subprocess, driven through the real CLI and the SDK."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from mags import Mags, MagsError
from tests.integration.server_fixture import ServerProc, free_port, json_out

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (sandboxes)")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("cp")
    srv = ServerProc(base / "data", base / "home", free_port(), "namespaces").start()
    yield srv
    srv.stop()


_clients: list[Mags] = []


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    while _clients:
        _clients.pop().close()


@pytest.fixture
def spawn_server(tmp_path: Path):
    """Start servers inside a test; every one is stopped at teardown, even when asserts fail."""
    started: list[ServerProc] = []

    def start(runtime: str = "namespaces") -> ServerProc:
        srv = ServerProc(tmp_path / "data", tmp_path / "home", free_port(), runtime).start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop(signal.SIGKILL)


def sdk(srv: ServerProc, token: str | None = None) -> Mags:
    m = Mags(api_token=token or srv.admin_token, api_url=srv.url)
    _clients.append(m)
    return m


def test_cli_run_prints_output_and_propagates_exit_code(server: ServerProc) -> None:
    r = server.cli("run", "echo Hello World")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "Hello World\n"
    r = server.cli("run", "echo out; echo err >&2; exit 7")
    assert r.returncode == 7
    assert "out" in r.stdout and "err" in r.stderr and "err" not in r.stdout


def test_output_streams_while_the_script_runs(server: ServerProc) -> None:
    m = sdk(server)
    job = m.run("echo first; sleep 1.5; echo second")
    seen: list[tuple[float, str]] = []
    for entry in m.follow_logs(job["request_id"]):
        seen.append((time.monotonic(), entry["message"]))
    messages = [msg for _, msg in seen]
    assert messages[:2] == ["first", "second"]
    assert seen[1][0] - seen[0][0] > 1.0  # the first line arrived before the script finished


def test_status_logs_list_and_find_by_name(server: ServerProc) -> None:
    m = sdk(server)
    result = m.run_and_wait("echo named-output", name="named-job")
    assert result["status"] == "completed" and result["exit_code"] == 0
    assert [e["message"] for e in result["logs"] if e["source"] == "stdout"] == ["named-output"]
    found = m.find_job("named-job")
    assert found is not None and found["request_id"] == result["request_id"]
    st = json_out(server.cli("status", "named-job", "--json"))
    assert st["request_id"] == result["request_id"] and st["status"] == "completed"  # type: ignore[index]
    assert st["vm_id"] and st["script_duration_ms"] is not None  # type: ignore[index]
    logs = server.cli("logs", result["request_id"])
    assert "named-output" in logs.stdout
    listing = server.cli("list")
    assert result["request_id"][:8] in listing.stdout
    jobs = m.list_jobs()
    assert jobs["jobs"][0]["created_at"] >= jobs["jobs"][-1]["created_at"]  # newest first


def test_stop_a_long_job(server: ServerProc) -> None:
    m = sdk(server)
    job = m.run("sleep 300")
    rid = job["request_id"]
    m.wait_for_status(rid, ["running"], timeout=30)
    r = server.cli("stop", rid)
    assert r.returncode == 0, r.stderr
    st = m.status(rid)
    assert st["status"] == "error"
    assert "stopped by user" in (st["error_message"] or "")
    assert st["vm_status"] == "stopped"


def test_twenty_concurrent_jobs_all_complete(server: ServerProc) -> None:
    m = sdk(server)

    def one(i: int) -> dict:
        return m.run_and_wait(f"echo job-{i}; exit {i % 3}", timeout=120)

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(one, range(20)))
    for i, res in enumerate(results):
        assert res["exit_code"] == i % 3
        assert res["status"] == ("completed" if i % 3 == 0 else "error")
        assert [e["message"] for e in res["logs"] if e["source"] == "stdout"] == [f"job-{i}"]


def test_a_second_user_cannot_see_or_stop_the_first_users_jobs(server: ServerProc) -> None:
    admin = sdk(server)
    job = admin.run("sleep 60")
    rid = job["request_id"]
    other = sdk(server, server.create_user_token("bob"))
    for call in (lambda: other.status(rid), lambda: other.logs(rid), lambda: other.stop(rid)):
        with pytest.raises(MagsError) as exc:
            call()
        assert exc.value.status_code == 404
    assert rid not in [j["request_id"] for j in other.list_jobs()["jobs"]]
    r = httpx.post(f"{server.url}/api/v1/mags-jobs/{rid}/stop", headers={"Authorization": f"Bearer {other.api_token}"})
    assert r.status_code == 404 and "error" in r.json()
    assert admin.status(rid)["status"] in ("pending", "running")
    admin.stop(rid)


def test_revoked_token_stops_working_at_once(server: ServerProc) -> None:
    r = server.cli("token", "create", "--name", "temp", "--json")
    created = json_out(r)
    token = created["token"]  # type: ignore[index]
    assert sdk(server, token).list_jobs()["total"] >= 0
    assert server.cli("token", "revoke", str(created["id"])).returncode == 0  # type: ignore[index]
    resp = httpx.get(f"{server.url}/api/v1/mags-jobs", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 401 and "error" in resp.json()
    resp = httpx.get(f"{server.url}/api/v1/mags-jobs")
    assert resp.status_code == 401 and "error" in resp.json()


def test_bad_input_gets_clear_errors(server: ServerProc) -> None:
    h = {"Authorization": f"Bearer {server.admin_token}"}
    cases = [
        ({"script": ""}, 400),
        ({}, 400),
        ({"script": "echo", "ephemeral": True, "workspace_id": "w"}, 400),
        ({"script": "echo", "no_sleep": True}, 400),
        ({"script": "echo", "environment": {"A": 1}}, 400),
        ({"script": "x" * (1024 * 1024 + 1)}, 413),
    ]
    for body, status in cases:
        r = httpx.post(f"{server.url}/api/v1/mags-jobs", json=body, headers=h)
        assert r.status_code == status, (body if len(str(body)) < 100 else "big", r.text)
        assert isinstance(r.json()["error"], str) and r.json()["error"]
    r = server.cli("run", "-e", "-w", "x", "echo hi")
    assert r.returncode != 0 and r.stderr.count("\n") <= 2 and "Traceback" not in r.stderr


def test_cli_says_when_the_server_is_down(tmp_path: Path) -> None:
    srv = ServerProc(tmp_path / "d", tmp_path / "h", free_port(), "namespaces")
    env = {"HOME": str(tmp_path), "MAGS_API_URL": srv.url, "MAGS_API_TOKEN": "x"}
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "mags", "list"], capture_output=True, text=True,
                       env={**os.environ, **env})
    assert r.returncode == 3
    assert "cannot reach mags server" in r.stderr and "Traceback" not in r.stderr


def test_kill9_mid_job_then_restart_is_consistent(spawn_server) -> None:
    srv = spawn_server()
    m = sdk(srv)
    job = m.run("echo started; sleep 300")
    rid = job["request_id"]
    m.wait_for_status(rid, ["running"], timeout=30)
    srv.stop(signal.SIGKILL)
    srv.start()
    m = sdk(srv)
    st = m.status(rid)
    assert st["status"] == "error" and st["vm_status"] == "stopped"
    assert "server restarted" in (st["error_message"] or "")
    assert m.run_and_wait("echo after-restart")["status"] == "completed"


def test_sigterm_ends_running_jobs_with_a_reason(spawn_server) -> None:
    srv = spawn_server()
    m = sdk(srv)
    rid = m.run("sleep 300")["request_id"]
    m.wait_for_status(rid, ["running"], timeout=30)
    assert srv.stop(signal.SIGTERM) == 0
    srv.start()
    st = sdk(srv).status(rid)
    assert st["status"] == "error" and "shutting down" in (st["error_message"] or "")


def test_gvisor_runtime_end_to_end(spawn_server) -> None:
    from mags.runtime.gvisor import find_runsc

    if find_runsc() is None:
        pytest.skip("gVisor runsc not installed; run scripts/setup.sh")
    srv = spawn_server("gvisor")
    r = srv.cli("run", "echo Hello World; uname -r")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "Hello World"
    assert lines[1] != os.uname().release  # gVisor reports its own kernel, not the host's
