"""runtime/spawn.py: children with asyncio pipes and a pidfd, on the stock loop and on uvloop."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from mags.runtime.spawn import run, spawn

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def on(loop: str, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(main())


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_pipes_both_ways_and_exit_code(loop: str) -> None:
    async def main() -> None:
        child = await spawn(["sh", "-c", "read line; echo got:$line; exit 7"], stdin=True, stdout=True)
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(b"hello\n")
        await child.stdin.drain()
        assert await asyncio.wait_for(child.stdout.readline(), 10) == b"got:hello\n"
        assert await asyncio.wait_for(child.wait(), 10) == 7
        assert child.returncode == 7
        assert await child.stdout.read() == b""  # EOF once it exited
        child.close()

    on(loop, main)


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_kill_and_concurrent_waiters(loop: str) -> None:
    async def main() -> None:
        child = await spawn(["sleep", "30"], start_new_session=True)
        waiters = [asyncio.ensure_future(child.wait()) for _ in range(3)]
        await asyncio.sleep(0.05)
        assert child.returncode is None and not any(w.done() for w in waiters)
        child.kill()
        codes = await asyncio.wait_for(asyncio.gather(*waiters), 10)
        assert codes == [-signal.SIGKILL] * 3
        child.kill()  # killing an exited child is a no-op

    on(loop, main)


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_run_collects_output(loop: str) -> None:
    async def main() -> None:
        code, out, err = await run(["sh", "-c", "echo out; echo err >&2; exit 3"])
        assert (code, out, err) == (3, b"out\n", b"err\n")

    on(loop, main)


def test_a_missing_program_raises_at_spawn() -> None:
    async def main() -> None:
        with pytest.raises(FileNotFoundError):
            await spawn(["/nonexistent/program"])

    on("asyncio", main)
