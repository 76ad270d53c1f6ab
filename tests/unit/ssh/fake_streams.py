"""A fake agent with ``open_attach`` / ``open_connect`` for gateway tests (no sandboxes).

``open_attach`` runs the requested command as a local subprocess (no PTY) and speaks the
attach protocol of ``agent/attach.py``; ``open_connect`` opens a local TCP connection to the
port.  Only tests do this: the real gateway reaches processes through the agent only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from typing import Any

from scheduler.fake_agent import FakeAgentClient


class _Stream:
    """The client end of a fake WebSocket: ``send``, async iteration, ``close``."""

    def __init__(self) -> None:
        self._incoming: asyncio.Queue[Any] = asyncio.Queue()
        self.closed = False

    def __aiter__(self) -> _Stream:
        return self

    async def __anext__(self) -> Any:
        item = await self._incoming.get()
        if item is None:
            raise StopAsyncIteration
        return item

    def _emit(self, item: Any) -> None:
        self._incoming.put_nowait(item)


class FakeAttach(_Stream):
    """Runs ``command`` locally; records the start message, resizes and signals."""

    def __init__(self) -> None:
        super().__init__()
        self.first: dict[str, Any] | None = None
        self.controls: list[dict[str, Any]] = []
        self.proc: asyncio.subprocess.Process | None = None

    async def send(self, msg: bytes | str) -> None:
        if isinstance(msg, str):
            ctl = json.loads(msg)
            if self.first is None:
                self.first = ctl
                await self._start(ctl)
                return
            self.controls.append(ctl)
            assert self.proc is not None and self.proc.stdin is not None
            if ctl["type"] == "eof":
                self.proc.stdin.close()
            elif ctl["type"] == "signal" and self.proc.returncode is None:
                self.proc.send_signal(int(ctl["signal"]))
            return
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(msg)
        with contextlib.suppress(ConnectionError):
            await self.proc.stdin.drain()

    async def _start(self, ctl: dict[str, Any]) -> None:
        cmd = ctl["command"]
        argv = ["/bin/sh"] if cmd is None else (["/bin/sh", "-c", cmd] if isinstance(cmd, str) else cmd)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **ctl.get("env", {})}
        self.proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env, start_new_session=True,
        )  # fmt: skip
        self._emit(json.dumps({"type": "started", "pid": self.proc.pid}))
        asyncio.get_running_loop().create_task(self._pump())

    async def _pump(self) -> None:
        assert self.proc is not None

        async def copy(stream: asyncio.StreamReader, tag: bytes) -> None:
            while chunk := await stream.read(65536):
                self._emit(tag + chunk)

        await asyncio.gather(copy(self.proc.stdout, b"\x01"), copy(self.proc.stderr, b"\x02"))  # type: ignore[arg-type]
        code = await self.proc.wait()
        sig = -code if code < 0 else None
        self._emit(json.dumps({"type": "exit", "exit_code": 128 + sig if sig else code, "signal": sig}))
        self._emit(None)

    async def close(self) -> None:
        self.closed = True
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
        self._emit(None)


class FakeConnect(_Stream):
    """A TCP connection to 127.0.0.1:port as binary messages."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__()
        self.writer = writer
        asyncio.get_running_loop().create_task(self._pump(reader))

    async def _pump(self, reader: asyncio.StreamReader) -> None:
        while chunk := await reader.read(65536):
            self._emit(chunk)
        self._emit(None)

    async def send(self, msg: bytes) -> None:
        self.writer.write(msg)
        await self.writer.drain()

    async def close(self) -> None:
        self.closed = True
        self.writer.close()
        self._emit(None)


async def _ignore(msg: Any) -> None:
    from websockets.exceptions import ConnectionClosedOK

    raise ConnectionClosedOK(None, None)


async def _noop() -> None:
    return None


class StreamingFakeAgent(FakeAgentClient):
    """FakeAgentClient plus attach/connect; remembers what was opened."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.attaches: list[tuple[str, FakeAttach]] = []
        self.connects: list[tuple[str, int]] = []
        # ports whose server listens on the sandbox's loopback only: the agent cannot reach them
        self.loopback_only: set[int] = set()

    async def open_attach(self, sandbox_id: str) -> FakeAttach:
        await self.get_sandbox(sandbox_id)
        ws = FakeAttach()
        self.attaches.append((sandbox_id, ws))
        return ws

    async def open_connect(self, sandbox_id: str, port: int) -> FakeConnect:
        await self.get_sandbox(sandbox_id)
        self.connects.append((sandbox_id, port))
        if port in self.loopback_only:  # what agent/attach.py's connect answers then
            refused = _Stream()
            refused._emit(
                json.dumps({"type": "error", "error": f"nothing listens on port {port} in the sandbox"})
            )
            refused._emit(None)
            refused.send = _ignore  # type: ignore[method-assign]
            refused.close = _noop  # type: ignore[method-assign]
            return refused  # type: ignore[return-value]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return FakeConnect(reader, writer)
