"""Start a real ``mags server`` subprocess on a temp data dir and a free port, for tests and benches."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
MAGS = [sys.executable, "-m", "mags"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProc:
    data_dir: Path
    home: Path
    port: int
    runtime: str
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_token(self) -> str:
        return (self.data_dir / "admin.token").read_text().strip()

    def env(self, token: str | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.extra_env)
        env["HOME"] = str(self.home)
        env["MAGS_API_URL"] = self.url
        env["MAGS_API_TOKEN"] = token or self.admin_token
        env.pop("MAGS_CONFIG", None)
        return env

    def start(self, timeout: float = 60.0) -> ServerProc:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"
        env = dict(os.environ)
        env.update(self.extra_env)
        env["HOME"] = str(self.home)
        cmd = [*MAGS, "server", "--data-dir", str(self.data_dir), "--port", str(self.port), "--runtime", self.runtime]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mags server exited {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/api/v1/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"mags server not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:] if self.log_path and self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def cli(self, *args: str, token: str | None = None, timeout: float = 120, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*MAGS, *args], capture_output=True, text=True, env=self.env(token), timeout=timeout, input=input, cwd=REPO
        )

    def create_user_token(self, user: str) -> str:
        r = httpx.post(
            f"{self.url}/api/v1/tokens", json={"user": user, "name": f"{user}-token"},
            headers={"Authorization": f"Bearer {self.admin_token}"}, timeout=10,
        )
        r.raise_for_status()
        return str(r.json()["token"])


def json_out(proc: subprocess.CompletedProcess[str]) -> object:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)
