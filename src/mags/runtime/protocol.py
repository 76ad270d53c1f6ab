"""The host side of the sandbox protocol (see native/protocol.h, which this mirrors).

One ``InitConnection`` per sandbox speaks to the in-sandbox init over an ordered byte stream
(pipes for namespaces and gVisor; a virtio-serial port for a microVM).  It multiplexes
processes and file transfers by id and turns frames into per-process event queues.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import struct
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field

from mags.errors import SandboxError, SandboxGone

PROTOCOL_VERSION = "mags-init/1"
HEADER = struct.Struct("<BII")
MAX_FRAME = 8 * 1024 * 1024
CHUNK = 256 * 1024

# agent -> init
T_SPAWN, T_STDIN, T_STDIN_CLOSE, T_SIGNAL, T_RESIZE, T_KILL_ALL, T_PING = 1, 2, 3, 4, 5, 6, 7
T_FILE_OPEN, T_FILE_DATA, T_FILE_CLOSE, T_SHUTDOWN = 8, 9, 10, 11
# init -> agent
T_HELLO, T_STARTED, T_STDOUT, T_STDERR, T_EXIT, T_ERROR, T_PONG, T_FILE_DONE, T_CLOSED = range(64, 73)

SPAWN_PTY = 1
SPAWN_STDIN = 2


def encode(ftype: int, ident: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(ftype, ident, len(payload)) + payload


def encode_spawn(
    argv: Sequence[str], env: Mapping[str, str], cwd: str, *, pty: bool, stdin: bool, rows: int = 24, cols: int = 80
) -> bytes:
    flags = (SPAWN_PTY if pty else 0) | (SPAWN_STDIN if stdin else 0)
    head = struct.pack("<IHHII", flags, rows, cols, len(argv), len(env))
    strings = [cwd, *argv, *(f"{k}={v}" for k, v in env.items())]
    for s in strings:
        if "\x00" in s:
            raise SandboxError("arguments and environment may not contain NUL bytes")
    return head + b"".join(s.encode() + b"\x00" for s in strings)


@dataclass
class Output:
    """A chunk of process output as it arrived."""

    stream: str  # "stdout" | "stderr"
    data: bytes


@dataclass
class ExitStatus:
    exit_code: int
    signal: int = 0


@dataclass
class _ProcState:
    queue: asyncio.Queue[Output | ExitStatus | None] = field(default_factory=asyncio.Queue)
    started: asyncio.Future[int] | None = None
    exit: asyncio.Future[ExitStatus] | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    errors: list[str] = field(default_factory=list)


class ProcessHandle:
    """A process inside a sandbox: its output events, stdin, signals and exit."""

    def __init__(self, conn: InitConnection, ident: int, state: _ProcState) -> None:
        self._conn = conn
        self.id = ident
        self._state = state
        self.pid: int | None = None

    async def events(self) -> AsyncIterator[Output | ExitStatus]:
        """Yield output chunks, then the ExitStatus (output written after exit follows it)."""
        while True:
            item = await self._state.queue.get()
            if item is None:
                return
            yield item

    async def wait(self) -> ExitStatus:
        assert self._state.exit is not None
        return await asyncio.shield(self._state.exit)

    @property
    def errors(self) -> list[str]:
        return self._state.errors

    async def write(self, data: bytes) -> None:
        for i in range(0, len(data), CHUNK):
            await self._conn.send(T_STDIN, self.id, data[i : i + CHUNK])

    async def close_stdin(self) -> None:
        await self._conn.send(T_STDIN_CLOSE, self.id)

    async def signal(self, sig: int) -> None:
        await self._conn.send(T_SIGNAL, self.id, struct.pack("<i", sig))

    async def resize(self, rows: int, cols: int) -> None:
        await self._conn.send(T_RESIZE, self.id, struct.pack("<HH", rows, cols))


class InitConnection:
    """Speaks the protocol with one sandbox's init over a (reader, writer) pair."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter | None, write_fd: int | None = None):
        self._reader = reader
        self._writer = writer
        self._write_fd = write_fd
        self._ids = itertools.count(1)
        self._procs: dict[int, _ProcState] = {}
        self._files: dict[int, asyncio.Future[int]] = {}
        self._pings: dict[int, asyncio.Future[None]] = {}
        self._lock = asyncio.Lock()
        self.hello: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Event = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._read_loop())

    # ------------------------------------------------------------------ sending
    async def send(self, ftype: int, ident: int, payload: bytes = b"") -> None:
        if self.closed.is_set():
            raise SandboxGone("sandbox is gone")
        frame = encode(ftype, ident, payload)
        if self._writer is None:
            raise SandboxGone("sandbox is gone")
        try:
            self._writer.write(frame)
            if self._writer.transport.get_write_buffer_size() > 1 << 20:
                await self._writer.drain()
        except (ConnectionError, RuntimeError) as exc:
            raise SandboxGone("sandbox is gone") from exc

    async def spawn(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: str = "/root",
        *,
        pty: bool = False,
        stdin: bool = False,
        rows: int = 24,
        cols: int = 80,
    ) -> ProcessHandle:
        loop = asyncio.get_running_loop()
        ident = next(self._ids)
        state = _ProcState(started=loop.create_future(), exit=loop.create_future())
        self._procs[ident] = state
        await self.send(T_SPAWN, ident, encode_spawn(argv, env, cwd, pty=pty, stdin=stdin, rows=rows, cols=cols))
        handle = ProcessHandle(self, ident, state)
        assert state.started is not None
        handle.pid = await state.started
        return handle

    async def put_file(self, path: str, chunks: AsyncIterator[bytes] | bytes, mode: int = 0o644) -> None:
        """Write a file inside the sandbox (parents created), streamed in chunks."""
        ident = next(self._ids)
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._files[ident] = fut
        await self.send(T_FILE_OPEN, ident, struct.pack("<I", mode) + path.encode() + b"\x00")
        if isinstance(chunks, bytes):
            for i in range(0, len(chunks), CHUNK):
                await self.send(T_FILE_DATA, ident, chunks[i : i + CHUNK])
        else:
            async for chunk in chunks:
                for i in range(0, len(chunk), CHUNK):
                    await self.send(T_FILE_DATA, ident, chunk[i : i + CHUNK])
        await self.send(T_FILE_CLOSE, ident)
        err = await fut
        if err:
            raise SandboxError(f"cannot write {path} in sandbox: {os.strerror(err)}")

    async def ping(self, timeout: float = 5.0) -> None:
        ident = next(self._ids)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pings[ident] = fut
        await self.send(T_PING, ident)
        await asyncio.wait_for(fut, timeout)

    async def kill_all(self) -> None:
        await self.send(T_KILL_ALL, 0)

    async def shutdown(self) -> None:
        try:
            await self.send(T_SHUTDOWN, 0)
        except SandboxGone:
            pass

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._task.cancel()

    # ------------------------------------------------------------------ receiving
    async def _read_loop(self) -> None:
        try:
            while True:
                header = await self._reader.readexactly(HEADER.size)
                ftype, ident, length = HEADER.unpack(header)
                if length > MAX_FRAME:
                    raise SandboxError(f"init sent an oversized frame ({length} bytes)")
                payload = await self._reader.readexactly(length) if length else b""
                self._dispatch(ftype, ident, payload)
        except (asyncio.IncompleteReadError, ConnectionError, SandboxError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            # the stream ended (init is gone): nothing can be sent any more either
            if self._writer is not None:
                self._writer.close()
            self._on_closed()

    def _dispatch(self, ftype: int, ident: int, payload: bytes) -> None:
        if ftype == T_HELLO:
            if not self.hello.done():
                self.hello.set_result(payload.decode(errors="replace"))
            return
        if ftype == T_PONG:
            fut = self._pings.pop(ident, None)
            if fut and not fut.done():
                fut.set_result(None)
            return
        if ftype == T_FILE_DONE:
            ffut = self._files.pop(ident, None)
            if ffut and not ffut.done():
                ffut.set_result(struct.unpack("<i", payload[:4])[0])
            return
        state = self._procs.get(ident)
        if state is None:
            return
        if ftype == T_STARTED:
            if state.started and not state.started.done():
                state.started.set_result(struct.unpack("<I", payload[:4])[0])
        elif ftype == T_STDOUT:
            state.queue.put_nowait(Output("stdout", payload))
        elif ftype == T_STDERR:
            state.queue.put_nowait(Output("stderr", payload))
        elif ftype == T_ERROR:
            state.errors.append(payload[4:].decode(errors="replace"))
            if state.started and not state.started.done():
                # spawn failed before the process existed
                state.started.set_result(0)
        elif ftype == T_EXIT:
            code, sig = struct.unpack("<ii", payload[:8])
            status = ExitStatus(code, sig)
            if state.started and not state.started.done():
                state.started.set_result(0)
            if state.exit and not state.exit.done():
                state.exit.set_result(status)
            state.queue.put_nowait(status)
        elif ftype == T_CLOSED:
            state.closed.set()
            state.queue.put_nowait(None)
            self._procs.pop(ident, None)

    def _on_closed(self) -> None:
        self.closed.set()
        if not self.hello.done():
            self.hello.set_exception(SandboxGone("sandbox init exited before saying hello"))
            self.hello.exception()  # mark retrieved
        gone = ExitStatus(137, 9)
        for state in self._procs.values():
            if state.started and not state.started.done():
                state.started.set_result(0)
            if state.exit and not state.exit.done():
                state.exit.set_result(gone)
                state.queue.put_nowait(gone)
            state.queue.put_nowait(None)
        self._procs.clear()
        for ffut in self._files.values():
            if not ffut.done():
                ffut.set_result(5)  # EIO
        for pfut in self._pings.values():
            if not pfut.done():
                pfut.set_exception(SandboxGone("sandbox is gone"))
                pfut.exception()
