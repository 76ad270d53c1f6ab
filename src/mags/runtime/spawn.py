"""Child processes for an event loop that must not fork: ``Popen`` (vfork) + asyncio pipes + a pidfd.

``asyncio.create_subprocess_exec`` under uvloop goes through libuv, which ``fork()``s the whole
server (page tables of a large process: ~5 ms with the loop blocked, measured).  CPython's
``subprocess.Popen`` uses ``vfork`` when it can, so this module starts children with it and
hands their pipes to the running loop (any loop: stock asyncio or uvloop).  Exit is observed
through a pidfd (Linux >= 5.3), so no SIGCHLD handler or child-watcher thread is involved and
nothing else reaps our children.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
from collections.abc import Sequence
from typing import IO, Any

STREAM_LIMIT = 1 << 16


class Child:
    """A started child: ``stdin``/``stdout`` as asyncio streams, ``wait()``, ``kill()``."""

    def __init__(self, popen: subprocess.Popen[bytes], stdin: asyncio.StreamWriter | None,
                 stdout: asyncio.StreamReader | None, stdout_transport: asyncio.BaseTransport | None,
                 duplex: bool = False) -> None:
        self._popen = popen
        self.pid = popen.pid
        self.stdin = stdin
        self.stdout = stdout
        self._stdout_transport = stdout_transport
        self._duplex = duplex  # stdin and stdout are one socket
        self._exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._watch()

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            fd = os.pidfd_open(self.pid)
        except ProcessLookupError:  # already reaped elsewhere: cannot happen for our own child
            self._reap()
            return

        def readable() -> None:
            loop.remove_reader(fd)
            os.close(fd)
            self._reap()

        loop.add_reader(fd, readable)

    def _reap(self) -> None:
        code = self._popen.wait()  # the pidfd said it exited: returns at once
        if not self._exited.done():
            self._exited.set_result(code)
        if self.stdin is not None and not self._duplex:
            self.stdin.close()  # nobody reads it any more (and uvloop refuses to close over it)
        # (a socket is left to end by itself: what the child wrote last may still be unread)

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    def close(self) -> None:
        """Close both pipes (after :meth:`wait`, once their data is no longer wanted)."""
        if self.stdin is not None:
            self.stdin.close()
        if self._stdout_transport is not None:
            self._stdout_transport.close()

    def send_signal(self, sig: int) -> None:
        if self._popen.returncode is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


async def spawn(
    args: Sequence[str],
    *,
    stdin: bool = False,
    stdout: bool = False,
    stderr: int | IO[Any] | None = None,
    env: dict[str, str] | None = None,
    start_new_session: bool = False,
    duplex: bool = False,
) -> Child:
    """Start ``args``; ``stdin``/``stdout`` True gives the child a pipe wrapped as a stream.

    ``duplex``: the child's stdin and stdout are one end of a unix socket pair instead of two
    pipes (``Child.stdin``/``stdout`` are its two directions).  Unlike a pipe, a socket cannot
    be reopened through ``/proc/<pid>/fd``, so nothing that can see the child's descriptors
    can write into the stream.
    """
    if duplex:
        return await _spawn_duplex(args, stderr=stderr, env=env, start_new_session=start_new_session)
    loop = asyncio.get_running_loop()
    popen = subprocess.Popen(
        list(args),
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
        stderr=stderr if stderr is not None else subprocess.DEVNULL,
        env=env,
        start_new_session=start_new_session,
        close_fds=True,
    )
    writer: asyncio.StreamWriter | None = None
    reader: asyncio.StreamReader | None = None
    read_transport: asyncio.BaseTransport | None = None
    try:
        if stdout:
            assert popen.stdout is not None
            reader = asyncio.StreamReader(limit=STREAM_LIMIT, loop=loop)
            read_transport, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader, loop=loop), popen.stdout
            )
        if stdin:
            assert popen.stdin is not None
            transport, protocol = await loop.connect_write_pipe(
                lambda: asyncio.streams.FlowControlMixin(loop=loop), popen.stdin
            )
            writer = asyncio.StreamWriter(transport, protocol, None, loop)
    except BaseException:
        popen.kill()
        popen.wait()
        raise
    return Child(popen, writer, reader, read_transport)


async def run(args: Sequence[str], *, env: dict[str, str] | None = None) -> tuple[int, bytes, bytes]:
    """Run ``args`` to completion: (exit code, stdout, stderr).  Blocking work runs in a thread."""
    proc = await asyncio.to_thread(subprocess.run, list(args), capture_output=True, env=env)
    return proc.returncode, proc.stdout, proc.stderr


async def _spawn_duplex(
    args: Sequence[str], *, stderr: int | IO[Any] | None, env: dict[str, str] | None, start_new_session: bool
) -> Child:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        popen = subprocess.Popen(
            list(args),
            stdin=theirs.fileno(),
            stdout=theirs.fileno(),
            stderr=stderr if stderr is not None else subprocess.DEVNULL,
            env=env,
            start_new_session=start_new_session,
            close_fds=True,
        )
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    try:
        reader, writer = await asyncio.open_connection(sock=ours, limit=STREAM_LIMIT)
    except BaseException:
        ours.close()
        popen.kill()
        popen.wait()
        raise
    return Child(popen, writer, reader, writer.transport, duplex=True)
