"""The SSH gateway with the real OpenSSH client against a real ``mags server`` (issue 7)."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mags import Mags
from tests.integration.server_fixture import ServerProc, free_port
from tests.integration.ssh.helpers import Access, Tmux, client_opts, grant, missing_binaries

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (sandboxes)"),
    pytest.mark.skipif(
        bool(missing_binaries()), reason=f"OpenSSH client tools missing: {missing_binaries()}"
    ),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    base = tmp_path_factory.mktemp("ssh")
    srv = ServerProc(base / "data", base / "home", free_port(), "namespaces",
                     extra_env={"MAGS_SSH_PORT": str(free_port())}).start()  # fmt: skip
    yield srv
    srv.stop(signal.SIGKILL)


@pytest.fixture(scope="module")
def m(server: ServerProc) -> Iterator[Mags]:
    with Mags(api_token=server.admin_token, api_url=server.url) as client:
        yield client


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("keys")
    d.chmod(0o700)
    return d


@pytest.fixture(scope="module")
def box(m: Mags, server: ServerProc, keys: Path) -> Access:
    job = m.new("sshbox")
    return grant(server.url, server.admin_token, job["request_id"], keys, "sshbox")


def test_commands_exit_codes_and_separate_stderr(box: Access) -> None:
    r = box.ssh("echo out; echo err >&2; exit 7")
    assert (r.returncode, r.stdout, r.stderr) == (7, b"out\n", b"err\n")
    r = box.ssh("true")
    assert r.returncode == 0 and r.stdout == b""
    r = box.ssh("whoami; hostname; pwd; echo $HOME")
    assert r.stdout.decode().split() == ["root", "mags-vm", "/root", "/root"]
    r = box.ssh("echo {a,b}$((6*7))")  # run by bash, like sshd with root's shell
    assert r.stdout == b"a42 b42\n"


def test_stdin_piping_with_tar(box: Access, tmp_path: Path) -> None:
    buf = io.BytesIO()
    payload = os.urandom(300_000)
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("a.bin", payload), ("dir/b.txt", b"hello\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    untar = "rm -rf /root/tarred && mkdir /root/tarred && tar x -C /root/tarred"
    check = "sha256sum /root/tarred/a.bin && cat /root/tarred/dir/b.txt"
    r = box.ssh(f"{untar} && {check}", input=buf.getvalue())
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode().split("\n")
    assert out[0].split()[0] == hashlib.sha256(payload).hexdigest() and out[1] == "hello"
    r = box.ssh("wc -c", input=b"")  # EOF right away
    assert r.stdout.strip() == b"0"


def test_interactive_session_in_tmux(box: Access, tmp_path: Path) -> None:
    tmux = Tmux(tmp_path / "tmux.sock")
    try:
        tmux.start(box.ssh_argv("-tt"), cols=100, rows=30)
        tmux.wait_for("root@mags-vm")  # bash's prompt
        tmux.type_line("echo typed-$((6*7)); echo TERM=$TERM")
        screen = tmux.wait_for("typed-42")
        assert "TERM=tmux-256color" in screen or "TERM=screen" in screen, screen
        tmux.type_line("stty size")
        tmux.wait_for("30 100")
        tmux.resize(120, 40)
        time.sleep(0.5)
        tmux.type_line("clear; stty size")
        tmux.wait_for("40 120")
        # Ctrl-C reaches the foreground process through the sandbox's terminal
        tmux.type_line("sleep 100; echo not-interrupted")
        time.sleep(1)
        tmux.send("C-c")
        tmux.type_line("echo after-ctrl-c")
        screen = tmux.wait_for("\nafter-ctrl-c", timeout=10)
        assert "\nnot-interrupted" not in screen
        tmux.type_line("exit 3")
        tmux.wait_for("PANE-EXIT=3")
    finally:
        tmux.kill()


def test_scp_up_and_down_byte_exact(box: Access, tmp_path: Path) -> None:
    src = tmp_path / "up.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    r = box.scp(str(src), box.remote("/root/up.bin"))  # SFTP protocol (OpenSSH 9 default)
    assert r.returncode == 0, r.stderr
    down = tmp_path / "down.bin"
    r = box.scp(box.remote("/root/up.bin"), str(down))
    assert r.returncode == 0, r.stderr
    assert down.read_bytes() == src.read_bytes()
    # legacy scp protocol (`scp -t` / `scp -f` through exec)
    legacy = tmp_path / "legacy.bin"
    assert box.scp("-O", str(src), box.remote("/root/legacy.bin")).returncode == 0
    r = box.scp("-O", box.remote("/root/legacy.bin"), str(legacy))
    assert r.returncode == 0, r.stderr
    assert legacy.read_bytes() == src.read_bytes()


def test_sftp_ls(box: Access, tmp_path: Path) -> None:
    box.ssh("mkdir -p /root/sftpdir && touch /root/sftpdir/visible-file")
    argv = ["sftp", "-b", "-", "-P", str(box.port), *client_opts(box.key, box.port), f"{box.user}@{box.host}"]
    r = subprocess.run(argv, input=b"cd /root/sftpdir\nls -l\n", capture_output=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert b"visible-file" in r.stdout


def _free_local_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, timeout: float = 30) -> str:
    """The body of the first 200 answer, retrying while the server in the sandbox starts."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            resp = httpx.get(url, timeout=5)
            if resp.status_code == 200:
                return resp.text
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def test_local_port_forwarding_to_http_server(box: Access) -> None:
    serve = "nohup python3 -m http.server {port} --directory /root/web {bind} >/dev/null 2>&1 &"
    r = box.ssh(
        "mkdir -p /root/web && echo forwarded-ok > /root/web/index.txt && "
        f"({serve.format(port=8000, bind='')}) && ({serve.format(port=8001, bind='--bind 127.0.0.1')}); sleep 0.5"
    )
    assert r.returncode == 0, r.stderr
    local, loopback, bad = _free_local_port(), _free_local_port(), _free_local_port()
    tunnel = subprocess.Popen(
        [*box.ssh_argv("-N", "-L", f"127.0.0.1:{local}:localhost:8000", "-L", f"127.0.0.1:{loopback}:localhost:8001",
                       "-L", f"127.0.0.1:{bad}:1.1.1.1:80", "-o", "ExitOnForwardFailure=yes")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert _get(f"http://127.0.0.1:{local}/index.txt") == "forwarded-ok\n"
        # many requests over fresh forwarded connections
        for _ in range(20):
            assert httpx.get(f"http://127.0.0.1:{local}/index.txt", timeout=5).text == "forwarded-ok\n"
        # a server bound to the sandbox's loopback only (like most dev servers) is reached too
        assert _get(f"http://127.0.0.1:{loopback}/index.txt") == "forwarded-ok\n"
        # a destination outside the sandbox is refused
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{bad}/", timeout=5)
    finally:
        tunnel.terminate()
        tunnel.communicate(timeout=10)


def test_wrong_key_and_other_sandboxs_key(
    m: Mags, server: ServerProc, box: Access, keys: Path, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong.key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong)], check=True)
    r = box.ssh("true", key=wrong)
    assert r.returncode == 255 and b"Permission denied" in r.stderr
    # a user other than root is refused, even with the right key
    argv = box.ssh_argv()
    argv[-1] = f"admin@{box.host}"
    r = subprocess.run([*argv, "true"], capture_output=True, timeout=60, check=False)
    assert r.returncode == 255 and b"Permission denied" in r.stderr
    # another sandbox's key never opens this one: the key decides the sandbox
    other_job = m.new("sshother")
    other = grant(server.url, server.admin_token, other_job["request_id"], keys, "sshother")
    assert box.ssh("echo mine > /root/owner-marker").returncode == 0
    r = box.ssh("cat /root/owner-marker 2>&1 || echo no-marker", key=other.key)
    assert r.stdout == b"no-marker\n" or b"No such file" in r.stdout
    # and a bob can never get a key for admin's sandbox
    bob = server.create_user_token("bob-ssh")
    r = httpx.post(f"{server.url}/api/v1/mags-jobs/{other_job['request_id']}/access", json={"port": 22},
                   headers={"Authorization": f"Bearer {bob}"}, timeout=30)  # fmt: skip
    assert r.status_code == 404
    m.stop("sshother")
    r = other.ssh("true")
    assert r.returncode == 255 and b"Permission denied" in r.stderr


def test_after_stop_the_key_no_longer_works(m: Mags, server: ServerProc, keys: Path) -> None:
    job = m.new("sshstop")
    acc = grant(server.url, server.admin_token, job["request_id"], keys, "sshstop")
    assert acc.ssh("true").returncode == 0
    # an open connection is closed too
    master = subprocess.Popen([*acc.ssh_argv("-N")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1)
        m.stop("sshstop")
        r = acc.ssh("true")
        assert r.returncode == 255 and b"Permission denied" in r.stderr
        master.wait(timeout=20)  # the gateway's sweep closes it
    finally:
        if master.poll() is None:
            master.kill()
