"""SSH session channels (shell, exec, SFTP) mapped onto the agent's ``attach`` WebSocket.

=====================  =========================================================
SSH                    attach (agent/attach.py)
=====================  =========================================================
pty-req                ``pty: true``, ``rows``/``cols``, ``TERM`` in ``env``
shell                  ``command: null`` (the sandbox's login shell)
exec CMD               ``CMD`` run by bash (sh without bash), cwd ``/root``, like sshd
subsystem sftp         ``/usr/lib/openssh/sftp-server`` (scp uses SFTP since OpenSSH 9)
env NAME=VALUE         passed for locale/terminal variables, others ignored (as sshd's AcceptEnv)
data / EOF             binary stdin / ``{"type": "eof"}`` (no EOF through a terminal: sshd too)
window-change          ``{"type": "resize"}``
signal NAME            ``{"type": "signal"}``
stdout / stderr        ``\\x01`` / ``\\x02`` messages → channel data / extended data
exit                   exit-status, or exit-signal for a process killed by a signal
=====================  =========================================================
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import asyncssh
from websockets.exceptions import ConnectionClosed

from mags.ssh.bridge import _STOP, ChannelBridge

log = logging.getLogger(__name__)

SFTP_SERVER = "/usr/lib/openssh/sftp-server"
# sshd runs a command with the user's shell (bash for root in our image); sh where there is none
EXEC_SHIM = 'if [ -x /bin/bash ]; then exec /bin/bash -c "$1"; fi; exec /bin/sh -c "$1"'
# what OpenSSH clients send by default (SendEnv LANG LC_*) and harmless terminal hints
PASS_ENV = re.compile(r"^(LANG|LANGUAGE|LC_[A-Z_]+|COLORTERM|TERM_PROGRAM|TERM_PROGRAM_VERSION|TZ)$")

WsOpener = Callable[[], Awaitable[Any]]


def exec_argv(command: str) -> list[str]:
    """The argv that runs an SSH exec request's command in the sandbox."""
    return ["/bin/sh", "-c", EXEC_SHIM, "sh", command]


def signal_number(name: str) -> int | None:
    """``"INT"`` → 2; None for names this platform does not know."""
    try:
        return int(signal.Signals[f"SIG{name.upper()}"])
    except KeyError:
        return None


def signal_name(number: int) -> str:
    """2 → ``"INT"`` (the form of SSH's exit-signal); unknown numbers → ``"KILL"``."""
    try:
        return signal.Signals(number).name[3:]
    except ValueError:
        return "KILL"


class AttachSession(ChannelBridge, asyncssh.SSHServerSession):  # type: ignore[type-arg]
    """One session channel: a process in the sandbox, started when the client says which."""

    def __init__(self, open_attach: WsOpener, label: str, keepalive_s: float | None = None) -> None:
        self._bridge_init()
        self._open_attach = open_attach
        self._label = label
        self._keepalive_s = keepalive_s
        self._pty = False
        self._term: str | None = None
        self._cols, self._rows = 80, 24
        self._argv: list[str] | None = None  # None: the login shell

    # ------------------------------------------------------------ requests (asyncssh callbacks)
    def connection_made(self, chan: Any) -> None:
        self._chan = chan

    def pty_requested(self, term_type: str, term_size: tuple[int, int, int, int], term_modes: Any) -> bool:
        self._pty = True
        self._term = term_type or None
        self._set_size(term_size[0], term_size[1])
        return True

    def shell_requested(self) -> bool:
        self._argv = None
        return True

    def exec_requested(self, command: str) -> bool:
        self._argv = exec_argv(command)
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        if subsystem != "sftp":
            log.info("ssh %s: subsystem %r refused", self._label, subsystem)
            return False
        self._argv = [SFTP_SERVER]
        self._pty = False  # a binary protocol must not go through a terminal
        return True

    def session_started(self) -> None:
        self._start(self._run())

    def data_received(self, data: bytes, datatype: Any) -> None:
        self._enqueue(bytes(data))

    def eof_received(self) -> bool:
        if not self._pty:  # sshd never closes a terminal's input on EOF either
            self._enqueue(json.dumps({"type": "eof"}))
        return True  # half-open: output and the exit status are still to come

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        self._set_size(width, height)
        self._enqueue(json.dumps({"type": "resize", "rows": self._rows, "cols": self._cols}))

    def signal_received(self, signame: str) -> None:
        number = signal_number(signame)
        if number is not None:
            self._enqueue(json.dumps({"type": "signal", "signal": number}))

    def break_received(self, msec: int) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._bridge_lost()

    # ------------------------------------------------------------ the process
    def _set_size(self, cols: int, rows: int) -> None:
        if cols > 0:
            self._cols = min(cols, 10_000)
        if rows > 0:
            self._rows = min(rows, 10_000)

    def _start_message(self) -> str:
        env = {k: v for k, v in self._chan.get_environment().items() if PASS_ENV.match(k) and "\0" not in v}
        if self._pty and self._term:
            env["TERM"] = self._term
        return json.dumps(
            {
                "command": self._argv,
                "pty": self._pty,
                "rows": self._rows,
                "cols": self._cols,
                "env": env,
                "cwd": "/root",
            }
        )

    async def _run(self) -> None:
        try:
            ws = await self._open_attach()
        except Exception as exc:  # noqa: BLE001 - told to the client, which then gets 255
            self._finish({"type": "error", "error": str(exc)})
            return
        sender = keepalive = None
        result: dict[str, Any] | None = None
        try:
            await ws.send(self._start_message())
            sender = self._task_for(self._send_loop(ws))
            if self._keepalive_s and self._argv != [SFTP_SERVER]:
                keepalive = self._task_for(self._keep_awake())
            result = await self._recv_loop(ws)
        except ConnectionClosed:
            pass
        finally:
            if keepalive is not None:
                keepalive.cancel()
            self._queue.put_nowait(_STOP)
            await self._stop_sender(sender, ws)
        self._finish(result)

    @staticmethod
    def _task_for(coro: Any) -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(coro)

    async def _keep_awake(self) -> None:
        """An open shell or command keeps its sandbox awake, however quiet it is.

        The agent counts every attach message as activity and ignores unknown types; without
        this a terminal left open for ``idle_timeout_s`` would have its sandbox put to sleep
        under it.  SFTP sessions and forwards count only their traffic (IDEs leave them open).
        """
        assert self._keepalive_s is not None
        while True:
            await asyncio.sleep(self._keepalive_s)
            self._enqueue(json.dumps({"type": "keepalive"}))

    async def _recv_loop(self, ws: Any) -> dict[str, Any] | None:
        async for msg in ws:
            if isinstance(msg, bytes):
                if len(msg) > 1 and not await self._write(msg[1:], stderr=msg[:1] == b"\x02"):
                    return None
                continue
            try:
                ctl = json.loads(msg)
            except ValueError:
                continue
            if ctl.get("type") in ("exit", "error"):
                return dict(ctl)
        return None

    def _finish(self, result: dict[str, Any] | None) -> None:
        """Send the exit status (or an error and 255) and close the channel."""
        if self._closed or self._chan is None:
            return
        try:
            if result is None:
                result = {"type": "error", "error": "the connection to the sandbox was lost"}
            if result.get("type") == "error":
                nl = "\r\n" if self._pty else "\n"
                self._chan.write_stderr(f"mags: {result.get('error') or 'sandbox error'}{nl}".encode())
                self._chan.exit(255)
            elif result.get("signal"):
                self._chan.exit_with_signal(signal_name(int(result["signal"])))
            else:
                self._chan.exit(int(result.get("exit_code") or 0) & 0xFF)
        except (BrokenPipeError, OSError):
            pass
