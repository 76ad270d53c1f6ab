"""``mags ssh NAME``: wakes a sleeping sandbox, restarts a stopped one, interactive via tmux."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mags import Mags
from tests.integration.server_fixture import REPO, ServerProc, free_port
from tests.integration.ssh.helpers import Tmux, missing_binaries

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (sandboxes)"),
    pytest.mark.skipif(
        bool(missing_binaries()), reason=f"OpenSSH client tools missing: {missing_binaries()}"
    ),
]
IDLE_S = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    base = tmp_path_factory.mktemp("mags-ssh")
    srv = ServerProc(
        base / "data",
        base / "home",
        free_port(),
        "namespaces",
        extra_env={"MAGS_SSH_PORT": str(free_port()), "MAGS_IDLE_TIMEOUT_S": str(IDLE_S)},
    ).start()
    yield srv
    srv.stop(signal.SIGKILL)


@pytest.fixture(scope="module")
def m(server: ServerProc) -> Iterator[Mags]:
    with Mags(api_token=server.admin_token, api_url=server.url) as client:
        yield client


def wait_vm(m: Mags, name: str, wanted: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    job = None
    while time.monotonic() < deadline:
        job = m.find_job(name)
        if job and job.get("vm_status") == wanted:
            return job
        time.sleep(0.2)
    raise AssertionError(f"{name} never became {wanted}: {job}")


def test_mags_ssh_print_wakes_a_sleeping_sandbox(server: ServerProc, m: Mags) -> None:
    assert server.cli("new", "sleepy").returncode == 0
    job = wait_vm(m, "sleepy", "sleeping")
    r = server.cli("ssh", "sleepy", "--print")
    assert r.returncode == 0, r.stderr
    argv = shlex.split(r.stdout.strip())
    assert argv[0] == "ssh" and argv[-1].startswith("root@")
    t = time.monotonic()
    out = subprocess.run([*argv[:-1], "-o", "BatchMode=yes", argv[-1], "echo awake; hostname"],
                         capture_output=True, timeout=60, check=False)  # fmt: skip
    woke_s = time.monotonic() - t
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [b"awake", b"mags-vm"]
    assert m.status(job["request_id"])["vm_status"] == "running"
    print(f"ssh into a sleeping sandbox: {woke_s * 1000:.0f} ms")


def test_mags_ssh_interactive_session(server: ServerProc, m: Mags, tmp_path: Path) -> None:
    wait_vm(m, "sleepy", "sleeping")
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {k: v for k, v in server.env().items() if k.startswith("MAGS_") or k in ("HOME", "PATH")}
    env["TMPDIR"] = str(tmpdir)
    tmux = Tmux(tmp_path / "tmux.sock")
    try:
        tmux.start([sys.executable, "-m", "mags", "ssh", "sleepy"], env={**env, "PWD": str(REPO)})
        tmux.wait_for("root@mags-vm", timeout=60)
        assert list(tmpdir.iterdir())  # the key file exists while connected
        tmux.type_line("echo hello-$((40+2))")
        tmux.wait_for("hello-42")
        # an open terminal keeps its sandbox awake though nothing is typed for > idle_timeout_s
        time.sleep(IDLE_S * 2 + 1)
        assert m.find_job("sleepy")["vm_status"] == "running"  # type: ignore[index]
        tmux.type_line("echo still-$((1+1))")
        tmux.wait_for("still-2")
        tmux.send("C-d")  # Ctrl-D ends the session like `exit`
        tmux.wait_for("PANE-EXIT=0")
    finally:
        tmux.kill()
    assert list(tmpdir.iterdir()) == []  # the private key was removed


def test_mags_ssh_restarts_a_stopped_sandbox(server: ServerProc, m: Mags) -> None:
    old = m.find_job("sleepy")
    assert server.cli("stop", "sleepy").returncode == 0
    r = server.cli("ssh", "sleepy", "--print")
    assert r.returncode == 0, r.stderr
    new = m.find_job("sleepy")
    assert new is not None and old is not None and new["request_id"] != old["request_id"]
    argv = shlex.split(r.stdout.strip())
    out = subprocess.run(
        [*argv[:-1], "-o", "BatchMode=yes", argv[-1], "echo back"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert out.stdout == b"back\n", out.stderr
