"""A server killed with SIGKILL and restarted brings persistent VMs back (scheduler/resume.py)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from mags import Mags
from mags.runtime.gvisor import find_runsc
from tests.integration.server_fixture import ServerProc, free_port

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (sandboxes)")


def wait_for(what: str, check, timeout: float = 30.0):  # noqa: ANN001, ANN201 - small poll helper
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.mark.parametrize("runtime", ["namespaces", "gvisor"])
def test_always_on_and_sleeping_vms_come_back_after_a_crash(tmp_path: Path, runtime: str) -> None:
    """Also on gVisor, whose sentry's own idle CPU must not keep a sandbox awake."""
    if runtime == "gvisor" and find_runsc() is None:
        pytest.skip("gVisor runsc is not installed (scripts/setup.sh installs it)")
    env = {"MAGS_IDLE_TIMEOUT_S": "3", "MAGS_SYNC_INTERVAL_S": "2"}
    srv = ServerProc(tmp_path / "data", tmp_path / "home", free_port(), runtime, extra_env=env).start()
    try:
        with Mags(api_token=srv.admin_token, api_url=srv.url) as m:
            # always-on: its script (a server) must be serving again after the crash
            api = m.run("echo boot >> /root/boots.txt; exec sleep infinity", workspace_id="api",
                        persistent=True, no_sleep=True, startup_command="echo up >> /root/ups.txt")
            api_id = api["request_id"]
            m.wait_for_status(api_id, ("running",), timeout=30)
            wait_for("the first boot", lambda: m.exec("api", "cat /root/boots.txt")["output"] == "boot\n")
            # an idle persistent sandbox goes to sleep before the crash
            dev = m.new("dev", persistent=True)
            assert m.exec("dev", "echo kept > /root/note.txt")["exit_code"] == 0
            wait_for("dev to sleep", lambda: m.status(dev["request_id"])["status"] == "sleeping")
            # an ephemeral job running at the crash is not resumed
            plain = m.run("sleep 300")["request_id"]
            m.wait_for_status(plain, ("running",), timeout=30)
            m.sync(api_id)

        srv.stop(signal.SIGKILL)
        srv.start()

        with Mags(api_token=srv.admin_token, api_url=srv.url) as m:
            st = wait_for("api to run again", lambda: (s := m.status(api_id))["vm_status"] == "running" and s)
            assert st["status"] == "running" and st["request_id"] == api_id
            assert any("re-provision" in (h["reason"] or "") for h in st["history"])
            # the script ran again on the restored workspace, and so did the startup command
            out = wait_for("the second boot", lambda: (o := m.exec("api", "cat /root/boots.txt")["output"])
                           == "boot\nboot\n" and o)
            assert out == "boot\nboot\n"
            assert "up" in m.exec("api", "cat /root/ups.txt")["output"]

            # the sleeping sandbox is still asleep, and wakes with its files on exec
            dev_st = m.status(dev["request_id"])
            assert dev_st["status"] == "sleeping" and dev_st["vm_status"] == "sleeping"
            assert m.exec("dev", "cat /root/note.txt")["output"] == "kept\n"
            # (the woken state reaches the job's history a moment after the exec's answer)
            wait_for("dev's wake in its history", lambda: any(
                (h["reason"] or "").startswith("woken") for h in m.status(dev["request_id"])["history"]))

            gone = m.status(plain)
            assert gone["status"] == "error" and "server restarted" in (gone["error_message"] or "")

            m.stop(api_id)
            m.stop(dev["request_id"])
    finally:
        srv.stop(signal.SIGKILL)


def test_persistent_vms_sleep_through_a_graceful_restart(tmp_path: Path) -> None:
    srv = ServerProc(tmp_path / "data", tmp_path / "home", free_port(), "namespaces").start()
    try:
        with Mags(api_token=srv.admin_token, api_url=srv.url) as m:
            dev = m.new("dev", persistent=True)
            assert m.exec("dev", "echo kept > /root/note.txt")["exit_code"] == 0
            web = m.run("echo boot >> /root/boots.txt; exec sleep infinity", workspace_id="web",
                        persistent=True, no_sleep=True)["request_id"]
            m.wait_for_status(web, ("running",), timeout=30)
            wait_for("the first boot", lambda: m.exec("web", "cat /root/boots.txt")["output"] == "boot\n")
            plain = m.run("sleep 300")["request_id"]
            m.wait_for_status(plain, ("running",), timeout=30)

        assert srv.stop(signal.SIGTERM) == 0
        srv.start()

        with Mags(api_token=srv.admin_token, api_url=srv.url) as m:
            st = m.status(dev["request_id"])
            assert st["status"] == "sleeping" and st["vm_status"] == "sleeping"
            assert any("restarts" in (h["reason"] or "") for h in st["history"])
            assert m.exec("dev", "cat /root/note.txt")["output"] == "kept\n"  # woken, files kept
            # the always-on VM slept through it and was re-provisioned, its script re-run
            wait_for("web to run again", lambda: m.status(web)["vm_status"] == "running")
            wait_for("the second boot", lambda: m.exec("web", "cat /root/boots.txt")["output"] == "boot\nboot\n")
            gone = m.status(plain)
            assert gone["status"] == "error" and "shutting down" in (gone["error_message"] or "")
            m.stop(dev["request_id"])
            m.stop(web)
    finally:
        srv.stop(signal.SIGKILL)
