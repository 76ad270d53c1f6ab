"""Nothing a server keeps is readable by another local user of its host.

A real ``mags server`` runs as ``scripts/setup.sh`` runs it: its output goes to
``<data dir>/server.log``, and it starts on a data dir an older version left world-readable
(0755, with a 0644 log).  A tenant then does what puts secrets on disk: a job with a secret in
its ``environment``, an upload, a persistent workspace synced to the local object store.

Host-side oracles: ``os.lstat`` of everything under the data dir (no group/other bit on any
file or directory), reads attempted as user ``nobody`` (denied), and the server's own log
(neither the admin token nor the job's secret value appears in it).  The data dir's parent is
world-traversable, so every denial comes from the server's own modes.  Runtime-independent:
the namespaces runtime only.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from mags import Mags
from tests.integration.server_fixture import MAGS, REPO, ServerProc, free_port
from tests.security.conftest import runtime_skip_reason

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def start_like_setup(base: Path) -> ServerProc:
    """``mags server`` with its output in ``<data>/server.log``, on a data dir left loose."""
    reason = runtime_skip_reason("namespaces")
    if reason:
        pytest.skip(reason)
    srv = ServerProc(
        base / "data", base / "home", free_port(), "namespaces",
        extra_env={"MAGS_POOL_SIZE": "1", "MAGS_SSH_PORT": "0", "MAGS_PROXY_PORT": str(free_port())},
    )  # fmt: skip
    srv.home.mkdir(mode=0o700)
    srv.data_dir.mkdir()
    os.chmod(srv.data_dir, 0o755)  # what an older version (or `mkdir -p` under umask 022) left
    srv.log_path = srv.data_dir / "server.log"
    env = {**os.environ, **srv.extra_env, "HOME": str(srv.home)}
    env.pop("MAGS_CONFIG", None)
    cmd = [
        *MAGS,
        "server",
        "--data-dir",
        str(srv.data_dir),
        "--port",
        str(srv.port),
        "--runtime",
        "namespaces",
    ]
    with open(srv.log_path, "ab") as log:
        os.chmod(srv.log_path, 0o644)  # the log an older scripts/setup.sh made
        srv.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if srv.proc.poll() is not None:
            raise RuntimeError(f"mags server exited {srv.proc.returncode}:\n{srv.log()}")
        try:
            if httpx.get(f"{srv.url}/api/v1/health", timeout=1).status_code == 200:
                return srv
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    srv.stop(signal.SIGKILL)
    raise RuntimeError(f"mags server not ready:\n{srv.log()}")


@dataclass
class Used:
    """A server after a tenant used it, and the secrets that went through it."""

    server: ServerProc
    secret: str
    alice_token: str
    upload: Path


@pytest.fixture(scope="module")
def used() -> Iterator[Used]:
    # not pytest's tmp dir: its parents are 0700, which would deny `nobody` for us
    base = Path(tempfile.mkdtemp(prefix="mags-host-local-", dir="/tmp"))
    os.chmod(base, 0o755)
    srv = None
    try:
        srv = start_like_setup(base)
        alice = srv.create_user_token("alice")
        secret = "s3cr3t-" + secrets.token_hex(16)
        with Mags(api_token=alice, api_url=srv.url) as m:
            done = m.run_and_wait(
                'echo "secret has ${#SECRET} chars"', environment={"SECRET": secret}, timeout=60
            )
            assert done["status"] == "completed", done
            src = base / "report.csv"
            src.write_text("tenant data\n")
            file_id = m.upload_file(str(src))
            done = m.run_and_wait("cat /uploads/report.csv", file_ids=[file_id], timeout=60)
            assert [e["message"] for e in done["logs"]] == ["tenant data"], done
        run = srv.cli("run", "-w", "x", "-p", "echo kept > /root/kept.txt", token=alice)
        assert run.returncode == 0, run.stderr
        stop = srv.cli("stop", "x", token=alice)  # a persistent stop syncs first
        assert stop.returncode == 0, stop.stderr
        assert any((srv.data_dir / "objects").rglob("*")), "the workspace was not synced"
        yield Used(srv, secret, alice, srv.data_dir / "files" / file_id)
    finally:
        if srv is not None and srv.proc is not None:
            srv.stop(signal.SIGTERM)
        shutil.rmtree(base, ignore_errors=True)


def test_no_file_or_directory_in_the_data_dir_is_shared(used: Used) -> None:
    """Every entry is root-only, whatever wrote it (API, agent, syncer, SQLite, the shell's log).

    No exceptions are needed: the guest image and the launcher binary, which sandboxes need,
    live in ``image_dir`` (``/var/lib/mags/images``) and its ``bin`` sibling, outside this data
    dir; in production (data dir ``/var/lib/mags``) they sit below the 0700 data dir and only
    root uses them.  Mounts (workspace disks) live in the server's own mount namespace, so this
    walk sees the directories below them, which are the server's too.
    """
    data = used.server.data_dir
    offenders = []
    seen = 0
    for root, dirs, files in os.walk(data):
        for name in [*dirs, *files]:
            path = Path(root) / name
            st = os.lstat(path)
            seen += 1
            if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o077:
                offenders.append(f"{stat.filemode(st.st_mode)} {path.relative_to(data)}")
    assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
    assert offenders == [], offenders
    assert seen > 20  # the database, objects, the upload, the workspace... were all there
    for name in ("mags.db", "admin.token", "server.log", "files", "objects", "workspaces"):
        assert (data / name).exists(), name


def nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is missing")
    return subprocess.run([*NOBODY, *argv], check=False, capture_output=True, text=True, timeout=30)


def test_another_user_can_read_nothing(used: Used) -> None:
    data = used.server.data_dir
    assert nobody("ls", str(data.parent)).returncode == 0  # the way there is open: data's mode decides
    listing = nobody("ls", str(data))
    assert listing.returncode != 0 and "Permission denied" in listing.stderr
    for path in (
        data / "mags.db", data / "mags.db-wal", data / "admin.token", data / "server.log", used.upload,
    ):  # fmt: skip
        assert path.exists(), path
        read = nobody("cat", str(path))
        assert read.returncode != 0 and "Permission denied" in read.stderr, (path, read.stdout[:200])
        assert read.stdout == ""


def test_the_server_log_holds_no_secret(used: Used) -> None:
    log = used.server.log_path.read_text(errors="replace") if used.server.log_path else ""
    admin = used.server.admin_token
    assert f"admin token written to {used.server.data_dir / 'admin.token'} (mode 0600)" in log
    assert admin not in log
    assert used.alice_token not in log
    assert used.secret not in log
    # and the loose modes an older version left were reported when they were fixed
    assert "made private (readable by root only)" in log and "server.log" in log


def test_sandboxes_still_get_the_usual_modes(used: Used) -> None:
    """The server's umask 077 is for its own files, not the guest's: a sandbox looks as before.

    Guest processes get umask 022, the guest's ``/`` (its writable layer's root) is 0755 and
    ``/etc/resolv.conf`` / ``/etc/hosts`` are readable by every guest user (``apt`` downloads
    as ``_apt``, services run as their own users).
    """
    script = (
        "umask; stat -c '%a %n' / /etc/resolv.conf /etc/hosts; "
        "setpriv --reuid=65534 --regid=65534 --clear-groups cat /etc/resolv.conf >/dev/null && echo nobody-reads"
    )
    with Mags(api_token=used.alice_token, api_url=used.server.url) as m:
        done = m.run_and_wait(script, timeout=60)
    lines = [e["message"] for e in done["logs"] if e["source"] == "stdout"]
    assert lines == ["0022", "755 /", "644 /etc/resolv.conf", "644 /etc/hosts", "nobody-reads"], done["logs"]
