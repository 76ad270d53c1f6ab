"""The gateway as its own process (``python -m mags.ssh``) beside a server with ``ssh_embedded=false``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mags import Mags
from tests.integration.server_fixture import REPO, ServerProc, free_port
from tests.integration.ssh.helpers import grant, missing_binaries

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (sandboxes)"),
    pytest.mark.skipif(
        bool(missing_binaries()), reason=f"OpenSSH client tools missing: {missing_binaries()}"
    ),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    base = tmp_path_factory.mktemp("ssh-standalone")
    port = free_port()
    srv = ServerProc(
        base / "data",
        base / "home",
        free_port(),
        "namespaces",
        extra_env={"MAGS_SSH_PORT": str(port), "MAGS_SSH_EMBEDDED": "false"},
    ).start()
    yield srv
    srv.stop(signal.SIGKILL)


def test_separate_gateway_process(server: ServerProc, tmp_path: Path) -> None:
    with Mags(api_token=server.admin_token, api_url=server.url) as m:
        job = m.new("standalone")
    acc = grant(server.url, server.admin_token, job["request_id"], tmp_path, "standalone")
    # nothing listens yet: the server issues keys but runs no gateway
    assert acc.ssh("true", "-o", "ConnectTimeout=2").returncode == 255
    env = {**server.env(), "MAGS_SSH_PORT": str(acc.port)}
    log = tmp_path / "gateway.log"
    with open(log, "wb") as out:
        gw = subprocess.Popen([sys.executable, "-m", "mags.ssh", "--data-dir", str(server.data_dir)],
                              env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while b"ready" not in log.read_bytes():
            assert gw.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        r = acc.ssh("echo from-the-standalone-gateway; hostname")
        assert r.returncode == 0, (r.stderr, log.read_text())
        assert r.stdout.split() == [b"from-the-standalone-gateway", b"mags-vm"]
        # its host key is the server's data dir's one (the same as an embedded gateway's)
        assert (server.data_dir / "ssh_host_ed25519_key").exists()
    finally:
        gw.send_signal(signal.SIGTERM)
        assert gw.wait(timeout=20) == 0, log.read_text()
