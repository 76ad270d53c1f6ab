"""Workspaces end to end: real server, real sandboxes, real object store (issue 4)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import time
from pathlib import Path

import httpx
import pytest

from mags import Mags, MagsError
from tests.integration.server_fixture import ServerProc, free_port

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (sandboxes)"),
    pytest.mark.skipif(importlib.util.find_spec("mags.core.workspaces") is None, reason="control-plane side not built yet"),
]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ws")


@pytest.fixture(scope="module")
def server(base: Path):
    srv = ServerProc(
        base / "data", base / "home", free_port(), "namespaces",
        extra_env={"MAGS_LOCAL_WORKSPACE_RETENTION_S": "4", "MAGS_OBJECT_STORE_DIR": str(base / "objects")},
    ).start()
    yield srv
    srv.stop(signal.SIGKILL)


@pytest.fixture
def m(server: ServerProc):
    with Mags(api_token=server.admin_token, api_url=server.url) as client:
        yield client


def out(result: dict) -> str:
    return "\n".join(e["message"] for e in result["logs"] if e["source"] == "stdout")


def run_ok(m: Mags, script: str, **kw: object) -> dict:
    r = m.run_and_wait(script, timeout=300, **kw)
    assert r["status"] == "completed", (r, [e["message"] for e in r["logs"]])
    return r


def stop_workspace(m: Mags, name: str) -> None:
    job = m.find_job(name)
    if job and (job.get("vm_status") in ("running", "sleeping") or job.get("status") in ("running", "sleeping")):
        m.stop(job["request_id"])


def test_files_and_pip_packages_survive_across_runs(m: Mags) -> None:
    run_ok(m, "echo kept > /root/notes.txt && pip install -q --no-cache-dir six==1.16.0 2>&1 | tail -1",
           workspace_id="pkgs", persistent=True)
    stop_workspace(m, "pkgs")
    r = run_ok(m, "cat /root/notes.txt; python3 -c 'import six; print(six.__version__)'",
               workspace_id="pkgs", persistent=True)
    assert out(r).split("\n") == ["kept", "1.16.0"]
    stop_workspace(m, "pkgs")


def test_local_workspace_is_kept_then_expires(m: Mags) -> None:
    run_ok(m, "echo local > /root/l.txt", workspace_id="scratchpad")
    assert out(run_ok(m, "cat /root/l.txt", workspace_id="scratchpad")) == "local"
    names = [w["workspace_id"] for w in m.list_workspaces()["workspaces"]]
    assert "scratchpad" in names
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if "scratchpad" not in [w["workspace_id"] for w in m.list_workspaces()["workspaces"]]:
            break
        time.sleep(0.5)
    else:
        pytest.fail("local workspace did not expire")
    r = m.run_and_wait("cat /root/l.txt", workspace_id="scratchpad", timeout=60)
    assert r["exit_code"] != 0  # a fresh workspace


def test_fork_sees_base_writes_only_to_itself_and_base_is_unchanged(m: Mags) -> None:
    run_ok(m, "mkdir -p /root/app && echo v1 > /root/app/version && echo gone > /root/app/remove-me",
           workspace_id="golden", persistent=True)
    stop_workspace(m, "golden")
    r = run_ok(m, "cat /root/app/version; rm /root/app/remove-me; echo fork > /root/app/version; echo new > /root/f",
               workspace_id="fork1", base_workspace_id="golden")
    assert out(r) == "v1"
    r = run_ok(m, "cat /root/app/version /root/f; ls /root/app", workspace_id="fork1", base_workspace_id="golden")
    assert out(r).split("\n") == ["fork", "new", "version"]
    r = run_ok(m, "cat /root/app/version /root/app/remove-me; ls /root/f 2>&1 || true",
               workspace_id="golden", persistent=True)
    assert out(r).split("\n")[:2] == ["v1", "gone"]
    stop_workspace(m, "golden")
    # --base without -w: changes are discarded
    run_ok(m, "echo scribble > /root/app/version", base_workspace_id="golden")
    assert out(run_ok(m, "cat /root/app/version", base_workspace_id="golden")) == "v1"


def test_missing_base_is_404(server: ServerProc) -> None:
    r = httpx.post(
        f"{server.url}/api/v1/mags-jobs", json={"script": "true", "base_workspace_id": "nope", "workspace_id": "x"},
        headers={"Authorization": f"Bearer {server.admin_token}"},
    )
    assert r.status_code == 404 and "nope" in r.json()["error"]


def test_disk_full_gives_enospc_and_nothing_else_suffers(m: Mags, server: ServerProc) -> None:
    free_before = shutil.disk_usage(server.data_dir).free
    r = m.run_and_wait("dd if=/dev/zero of=/root/fill bs=1M count=3000 2>&1 | grep -i 'space'; exit ${PIPESTATUS[0]}",
                       workspace_id="tiny", disk_gb=1, timeout=300)
    assert r["status"] == "error" and r["exit_code"] != 0
    assert "No space left on device" in out(r)
    assert shutil.disk_usage(server.data_dir).free > free_before - 1.2 * 1024**3
    assert out(run_ok(m, "echo still-fine")) == "still-fine"


def test_resize_keeps_files(m: Mags) -> None:
    run_ok(m, "head -c 300000000 /dev/urandom > /root/blob && sha256sum /root/blob > /root/sum",
           workspace_id="growme", persistent=True, disk_gb=1)
    stop_workspace(m, "growme")
    info = m.resize("growme", disk_gb=3)  # grow
    r = m.exec(info["request_id"], "sha256sum -c /root/sum && df -BG --output=size / | tail -1")
    assert r["exit_code"] == 0 and r["output"].split() == ["/root/blob:", "OK", "3G"], r
    stop_workspace(m, "growme")
    info = m.resize("growme", disk_gb=1)  # shrink: 300 MB fit
    r = m.exec(info["request_id"], "sha256sum -c /root/sum && df -BG --output=size / | tail -1")
    assert r["exit_code"] == 0 and r["output"].split() == ["/root/blob:", "OK", "1G"], r
    stop_workspace(m, "growme")
    info = m.resize("growme", disk_gb=3)
    assert m.exec(info["request_id"], "fallocate -l 1500M /root/big")["exit_code"] == 0
    stop_workspace(m, "growme")
    with pytest.raises(MagsError) as exc:  # shrinking below the data is refused...
        m.resize("growme", disk_gb=1)
    assert "cannot shrink" in str(exc.value)
    stop_workspace(m, "growme")
    info = m.resize("growme", disk_gb=4)  # ...and loses nothing
    r = m.exec(info["request_id"], "sha256sum -c /root/sum && stat -c %s /root/big && df -BG --output=size / | tail -1")
    assert r["exit_code"] == 0 and r["output"].split() == ["/root/blob:", "OK", str(1500 * 1024**2), "4G"], r
    stop_workspace(m, "growme")


def test_delete_removes_the_data(m: Mags, base: Path) -> None:
    run_ok(m, "echo doomed > /root/d.txt", workspace_id="doomed", persistent=True)
    job = m.find_job("doomed")
    m.sync(job["request_id"])
    objects = base / "objects"
    assert any(p.is_file() for p in objects.rglob("*") if "doomed" in str(p))
    m.delete_workspace("doomed")  # its VM idles after the script: stopped first, not synced again
    assert m.status(job["request_id"])["vm_status"] == "stopped"
    assert not any(p.is_file() for p in objects.rglob("*") if "doomed" in str(p))
    assert "doomed" not in [w["workspace_id"] for w in m.list_workspaces()["workspaces"]]
    assert not list((base / "data" / "workspaces").glob("*doomed*"))


def test_survives_server_restart_and_another_host(server: ServerProc, base: Path) -> None:
    with Mags(api_token=server.admin_token, api_url=server.url) as m:
        run_ok(m, "echo durable > /root/d.txt", workspace_id="travel", persistent=True)
    token = server.admin_token
    server.stop()
    server.start()  # same host, after a restart
    with Mags(api_token=token, api_url=server.url) as m:
        assert out(run_ok(m, "cat /root/d.txt; echo more >> /root/d.txt", workspace_id="travel", persistent=True)) == "durable"
        stop_workspace(m, "travel")
    server.stop()
    # "another host": empty data dir, same database and object store
    other = ServerProc(
        base / "host2", base / "home2", free_port(), "namespaces",
        extra_env={"MAGS_DATABASE_URL": f"sqlite:///{base / 'data' / 'mags.db'}",
                   "MAGS_OBJECT_STORE_DIR": str(base / "objects")},
    )
    try:
        other.start()
        with Mags(api_token=token, api_url=other.url) as m:
            r = run_ok(m, "cat /root/d.txt", workspace_id="travel", persistent=True)
            assert out(r).split("\n") == ["durable", "more"]
            stop_workspace(m, "travel")
    finally:
        other.stop()
        server.start()
