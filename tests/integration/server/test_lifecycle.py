"""Sandboxes you come back to: new, exec, files, sleep and wake, always-on (issue 5)."""

from __future__ import annotations

import importlib.util
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from mags import Mags, MagsError
from tests.integration.server_fixture import ServerProc, free_port

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (sandboxes)"),
    pytest.mark.skipif(importlib.util.find_spec("mags.core.files") is None, reason="control-plane side not built yet"),
]
IDLE_S = 4


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("life")
    srv = ServerProc(base / "data", base / "home", free_port(), "namespaces",
                     extra_env={"MAGS_IDLE_TIMEOUT_S": str(IDLE_S), "MAGS_SYNC_INTERVAL_S": "2"}).start()
    yield srv
    srv.stop(signal.SIGKILL)


@pytest.fixture
def m(server: ServerProc):
    with Mags(api_token=server.admin_token, api_url=server.url) as client:
        yield client


def wait_vm(m: Mags, job_id: str, wanted: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = m.status(job_id)
        if st["vm_status"] == wanted:
            return st
        time.sleep(0.2)
    raise AssertionError(f"vm_status never became {wanted}: {m.status(job_id)}")


def host_process(marker: str) -> tuple[int, Path] | None:
    """The host pid of the process whose command line holds ``marker``, and its memory cgroup."""
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if marker.encode() not in (d / "cmdline").read_bytes():
                continue
            for line in (d / "cgroup").read_text().splitlines():
                _, ctrl, path = line.split(":", 2)
                if ctrl in ("memory", ""):
                    base = Path("/sys/fs/cgroup/memory") if ctrl == "memory" else Path("/sys/fs/cgroup")
                    return int(d.name), base / path.lstrip("/")
        except OSError:
            continue
    return None


def test_new_exec_sees_files_then_stop(m: Mags) -> None:
    info = m.new("box1")
    assert info["vm_id"] and info["status"] == "running"
    r = m.exec("box1", "echo hi > /root/f && cd /tmp && pwd && hostname")
    assert r["exit_code"] == 0 and r["output"].split() == ["/tmp", "mags-vm"]
    r = m.exec("box1", "cat /root/f; whoami; exit 3")
    assert r["exit_code"] == 3 and r["output"].split() == ["hi", "root"]
    again = m.new("box1")  # a second new() for a live sandbox returns the same one
    assert again["request_id"] == info["request_id"]
    m.stop("box1")
    assert m.status(info["request_id"])["vm_status"] == "stopped"


def test_exec_timeout_is_reported(m: Mags) -> None:
    m.new("box2")
    t = time.monotonic()
    r = m.exec("box2", "sleep 30", timeout=1)
    assert time.monotonic() - t < 10
    assert r["exit_code"] != 0 and "timed out" in r["stderr"]
    m.stop("box2")


def test_idle_sandbox_sleeps_frees_everything_and_exec_wakes_it(m: Mags, server: ServerProc) -> None:
    job = m.run("python3 -c 'print(1)'", workspace_id="sleepy", persistent=True,
                startup_command="python3 -m http.server 9000 >/dev/null 2>&1")
    rid = job["request_id"]
    assert m.wait(rid)["exit_code"] == 0  # the script is done; the VM stays up
    running = wait_vm(m, rid, "running")
    marker = f"marker-{rid[:8]}"
    m.exec(rid, f"echo state > /root/s.txt; (exec -a {marker} sleep 3600) >/dev/null 2>&1 &")
    found = host_process(marker)
    assert found is not None
    pid, cgroup = found
    assert cgroup.is_dir() and int((cgroup / "memory.usage_in_bytes").read_text()) > 0
    slept = wait_vm(m, rid, "sleeping", timeout=IDLE_S * 6)
    assert slept["status"] == "sleeping"
    assert any("idle" in (h["reason"] or "") for h in m.status(rid)["history"])
    # every process stopped, its memory freed: the sandbox's cgroup is gone
    assert not Path(f"/proc/{pid}").exists() and host_process(marker) is None
    assert not cgroup.exists()
    t = time.monotonic()
    r = m.exec(rid, "cat /root/s.txt; for i in $(seq 50); do curl -s -o /dev/null localhost:9000 && break; sleep 0.1; done; curl -s -o /dev/null -w '%{http_code}' localhost:9000")
    assert time.monotonic() - t < 10
    assert r["exit_code"] == 0 and r["output"].split() == ["state", "200"]
    assert m.status(rid)["vm_status"] == "running"
    assert running["vm_id"] == m.status(rid)["vm_id"]
    m.stop(rid)


def test_busy_sandbox_is_not_put_to_sleep(m: Mags) -> None:
    job = m.run("timeout 60 sh -c 'while :; do :; done'", workspace_id="busy", persistent=True)
    rid = job["request_id"]
    wait_vm(m, rid, "running")
    time.sleep(IDLE_S * 3)
    assert m.status(rid)["vm_status"] == "running"
    m.stop(rid)


def test_no_sleep_never_sleeps_and_set_changes_it_live(m: Mags, server: ServerProc) -> None:
    job = m.run("true", workspace_id="awake", persistent=True, no_sleep=True)
    rid = job["request_id"]
    wait_vm(m, rid, "running")
    time.sleep(IDLE_S * 3)
    assert m.status(rid)["vm_status"] == "running"
    r = server.cli("set", rid, "--sleep")
    assert r.returncode == 0, r.stderr
    wait_vm(m, rid, "sleeping", timeout=IDLE_S * 6)
    m.stop(rid)


def test_uploads_land_at_both_paths_and_names_are_neutralised(m: Mags, server: ServerProc, tmp_path: Path) -> None:
    src = tmp_path / "data.csv"
    src.write_text("a,b\n1,2\n")
    fid = m.upload_file(src)
    r = m.run_and_wait("cat /uploads/data.csv /root/data.csv", file_ids=[fid], timeout=60)
    assert [e["message"] for e in r["logs"] if e["source"] == "stdout"] == ["a,b", "1,2", "a,b", "1,2"]
    h = {"Authorization": f"Bearer {server.admin_token}"}
    resp = httpx.post(f"{server.url}/api/v1/mags-files", headers=h,
                      files={"file": ("../../etc/pwn\x07.txt", b"x")})
    assert resp.status_code == 200, resp.text
    r = m.run_and_wait("ls /uploads; test -e /etc/pwn.txt && echo ESCAPED || true",
                       file_ids=[resp.json()["file_id"]], timeout=60)
    listing = [e["message"] for e in r["logs"] if e["source"] == "stdout"]
    assert "ESCAPED" not in listing and all("/" not in n and ".." not in n for n in listing)


def test_upload_over_100mb_is_413_and_leaves_nothing(server: ServerProc) -> None:
    files_dir = server.data_dir / "files"
    before = sorted(files_dir.rglob("*")) if files_dir.exists() else []
    limit = 100 * 1024 * 1024

    def body():
        yield b"--BOUNDARY\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\n\r\n"
        chunk = b"\0" * (1024 * 1024)
        for _ in range(100):
            yield chunk
        yield b"x"  # 100 MB + 1 byte
        yield b"\r\n--BOUNDARY--\r\n"

    resp = httpx.post(f"{server.url}/api/v1/mags-files", content=body(), timeout=120,
                      headers={"Authorization": f"Bearer {server.admin_token}",
                               "Content-Type": "multipart/form-data; boundary=BOUNDARY"})
    assert resp.status_code == 413 and "error" in resp.json()
    after = sorted(files_dir.rglob("*")) if files_dir.exists() else []
    assert after == before
    assert limit == 104857600


def test_other_tenant_cannot_exec_or_use_files(m: Mags, server: ServerProc, tmp_path: Path) -> None:
    info = m.new("private-box")
    src = tmp_path / "secret.txt"
    src.write_text("s3cret")
    fid = m.upload_file(src)
    with Mags(api_token=server.create_user_token("mallory"), api_url=server.url) as other:
        for call in (lambda: other.exec(info["request_id"], "id"),
                     lambda: other.run_and_wait("cat /uploads/secret.txt", file_ids=[fid], timeout=30)):
            with pytest.raises(MagsError) as exc:
                call()
            assert exc.value.status_code == 404
    m.stop("private-box")
