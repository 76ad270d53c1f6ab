"""OpenSSH client helpers for the SSH gateway tests: keys, argv, tmux panes."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

CLIENT_BINARIES = ("ssh", "scp", "sftp", "tmux")


def missing_binaries() -> list[str]:
    return [b for b in CLIENT_BINARIES if shutil.which(b) is None]


def client_opts(key: Path, port: int) -> list[str]:
    """Options every OpenSSH tool here gets (no known_hosts, no agent, only our key)."""
    return [
        "-i", str(key), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", "BatchMode=yes",
        "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=20", "-F", "/dev/null",
    ]  # fmt: skip


class Access:
    """What ``POST .../access {"port": 22}`` answered, with the key in a 0600 file."""

    def __init__(self, answer: dict[str, Any], key_dir: Path, name: str) -> None:
        self.host = str(answer["ssh_host"])
        self.port = int(answer["ssh_port"])
        self.user = str(answer.get("ssh_user") or "root")
        self.key = key_dir / f"{name}.key"
        fd = os.open(self.key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(answer["ssh_private_key"])

    def ssh_argv(self, *extra: str, key: Path | None = None) -> list[str]:
        return [
            "ssh",
            *client_opts(key or self.key, self.port),
            "-p",
            str(self.port),
            *extra,
            f"{self.user}@{self.host}",
        ]

    def ssh(self, command: str, *extra: str, input: bytes | None = None, key: Path | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[bytes]:  # fmt: skip
        return subprocess.run(
            [*self.ssh_argv(*extra, key=key), command],
            input=input,
            capture_output=True,
            timeout=timeout,
            check=False,
        )

    def scp(
        self, *args: str, legacy: bool = False, timeout: float = 60
    ) -> subprocess.CompletedProcess[bytes]:
        argv = [
            "scp",
            *client_opts(self.key, self.port),
            "-P",
            str(self.port),
            *(["-O"] if legacy else []),
            *args,
        ]
        return subprocess.run(argv, capture_output=True, timeout=timeout, check=False)

    def remote(self, path: str) -> str:
        return f"{self.user}@{self.host}:{path}"


def grant(url: str, token: str, job_id: str, key_dir: Path, name: str) -> Access:
    r = httpx.post(
        f"{url}/api/v1/mags-jobs/{job_id}/access", json={"port": 22},
        headers={"Authorization": f"Bearer {token}"}, timeout=30,
    )  # fmt: skip
    assert r.status_code == 200, r.text
    return Access(r.json(), key_dir, name)


class Tmux:
    """A detached tmux session on a private socket, driven like a user at a terminal."""

    def __init__(self, socket: Path, name: str = "t") -> None:
        self.socket, self.name = str(socket), name

    def run(self, *args: str) -> str:
        out = subprocess.run(
            ["tmux", "-S", self.socket, *args], capture_output=True, text=True, timeout=10, check=False
        )
        return out.stdout

    def start(
        self, argv: list[str], env: dict[str, str] | None = None, cols: int = 100, rows: int = 30
    ) -> None:
        import shlex

        envs = [a for k, v in (env or {}).items() for a in ("-e", f"{k}={v}")]
        self.run("new-session", "-d", "-s", self.name, "-x", str(cols), "-y", str(rows), *envs,
                 shlex.join(argv) + "; echo PANE-EXIT=$?; sleep 600")  # fmt: skip

    def send(self, *keys: str) -> None:
        self.run("send-keys", "-t", self.name, *keys)

    def type_line(self, text: str) -> None:
        self.send("-l", text)
        self.send("Enter")

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", self.name, "-S", "-200")

    def wait_for(self, needle: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if needle in screen:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{needle!r} never appeared on the screen:\n{screen}")

    def resize(self, cols: int, rows: int) -> None:
        self.run("resize-window", "-t", self.name, "-x", str(cols), "-y", str(rows))

    def kill(self) -> None:
        subprocess.run(
            ["tmux", "-S", self.socket, "kill-server"], capture_output=True, timeout=10, check=False
        )
