"""``mags.server.serve`` as a real process (uvicorn, signals) with the fake agent."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

FAKE_SERVER = Path(__file__).with_name("fake_server.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    def __init__(self, data: Path, home: Path, port: int) -> None:
        self.data, self.home, self.port = data, home, port
        self.url = f"http://127.0.0.1:{port}/api/v1"
        env = {**os.environ, "HOME": str(home)}
        env.pop("MAGS_CONFIG", None)
        self.proc = subprocess.Popen(
            [sys.executable, str(FAKE_SERVER), str(data), str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            text=True,
        )
        self.lines: list[str] = []
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"server exited: {''.join(self.lines)}")
            self.lines.append(line)
            if line.startswith("mags server ready"):
                return
        raise AssertionError("server not ready")

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=20)
        self.lines.append(out)
        return "".join(self.lines)


@pytest.fixture
def dirs(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    home = tmp_path / "home"
    home.mkdir()
    yield tmp_path / "data", home


def test_serve_lifecycle(dirs: tuple[Path, Path]) -> None:
    data, home = dirs
    port = free_port()
    srv = Proc(data, home, port)
    try:
        out = "".join(srv.lines)
        assert f"mags server ready on http://127.0.0.1:{port} (runtime: fake)" in out
        token_file = data / "admin.token"
        token = token_file.read_text().strip()
        # the token is in its 0600 file, never in the server's output (logs are often shared)
        assert token.startswith("mags_") and token not in out
        assert f"admin token written to {token_file} (mode 0600)" in out
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        config = home / ".mags" / "config.json"
        assert json.loads(config.read_text()) == {"api_url": f"http://127.0.0.1:{port}", "api_token": token}
        assert stat.S_IMODE(config.stat().st_mode) == 0o600
        assert stat.S_IMODE(config.parent.stat().st_mode) == 0o700

        h = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=srv.url, headers=h, timeout=30) as c:
            assert c.get("/health").json()["status"] == "ok"
            r = c.get("/nope")
            assert r.status_code == 404 and r.json() == {"error": "no such endpoint: GET /api/v1/nope"}

            # log follow really streams: the first line arrives before the script ends
            rid = c.post("/mags-jobs", json={"script": "echo first; sleep 0.6; echo second"}).json()["request_id"]
            seen: list[tuple[float, str]] = []
            with c.stream("GET", f"/mags-jobs/{rid}/logs", params={"follow": "true"}) as stream:
                event = None
                for line in stream.iter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: "):
                        seen.append((time.monotonic(), event or ""))
            assert [e for _, e in seen] == ["log", "log", "end"]
            assert seen[1][0] - seen[0][0] > 0.4

            busy = c.post("/mags-jobs", json={"script": "sleep infinity"}).json()["request_id"]
            assert c.get(f"/mags-jobs/{busy}/status", params={"wait": 5, "until": "running"}).json()["vm_id"]

            # SIGTERM answers a pending long-poll at once and ends the running job
            answered: list[float] = []

            def long_poll() -> None:
                with httpx.Client(base_url=srv.url, headers=h, timeout=30) as c2:
                    c2.get(f"/mags-jobs/{busy}/status", params={"wait": 30})
                    answered.append(time.monotonic())

            poller = threading.Thread(target=long_poll)
            poller.start()
            time.sleep(0.3)
            t0 = time.monotonic()
            log = srv.stop()
            poller.join(10)
            assert srv.proc.returncode == 0, log
            assert "mags server stopped" in log
            assert answered and answered[0] - t0 < 5
    finally:
        if srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait()

    # a second start keeps the token and the client config, and shows why the job ended
    before = config.read_text()
    srv = Proc(data, home, port)
    try:
        assert "admin token" not in "".join(srv.lines)
        assert config.read_text() == before
        with httpx.Client(base_url=srv.url, headers=h, timeout=30) as c:
            job = c.get(f"/mags-jobs/{busy}/status").json()
            assert job["status"] == "error" and job["error_message"] == "server shutting down"
            assert job["vm_status"] == "stopped"
            assert job["history"][-1]["reason"] in ("server shutting down", "agent stopping")
    finally:
        srv.stop()


def test_existing_client_config_is_kept(dirs: tuple[Path, Path]) -> None:
    data, home = dirs
    (home / ".mags").mkdir(mode=0o700)
    config = home / ".mags" / "config.json"
    config.write_text('{"api_url": "https://elsewhere", "api_token": "mine"}')
    srv = Proc(data, home, free_port())
    try:
        assert json.loads(config.read_text())["api_token"] == "mine"
        assert (data / "admin.token").exists()
    finally:
        srv.stop()
