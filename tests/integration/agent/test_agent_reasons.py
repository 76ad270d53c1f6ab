"""The agent reports why a script ended: out of memory, timeout, stop; bad input is refused."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from mags.agent.models import AgentEvent, SandboxRequest, StopRequest
from mags.agent.service import AgentService
from mags.errors import ValidationError
from mags.runtime.factory import create_runtime
from tests.integration.runtime.conftest import runtime_settings, skip_reason

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def agent(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AgentService]:
    settings = runtime_settings(str(tmp_path_factory.mktemp("agent")), pool_size=1)
    if reason := skip_reason("namespaces", settings):
        pytest.skip(reason)
    rt = create_runtime(settings, name="namespaces")
    await rt.start()
    svc = AgentService(settings, rt)
    await svc.start()
    yield svc
    await svc.close()
    await rt.close()


async def run(agent: AgentService, script: str, **kw: object) -> list[AgentEvent]:
    """Start a script and collect its events until its sandbox stopped."""
    sid = f"vm-{uuid.uuid4().hex[:8]}"
    after = agent.events.last_seq
    await agent.create(SandboxRequest(sandbox_id=sid, job_id=sid, script=script, **kw))  # type: ignore[arg-type]
    seen: list[AgentEvent] = []

    async def collect() -> None:
        async for batch in agent.events.follow(after):
            for ev in batch:
                if ev.sandbox_id == sid:
                    seen.append(ev)
                    if ev.type == "state" and ev.state == "stopped":
                        return

    await asyncio.wait_for(collect(), 60)
    return seen


def exit_of(events: list[AgentEvent]) -> AgentEvent:
    return next(e for e in events if e.type == "exit")


async def test_memory_bomb_ends_with_out_of_memory(agent: AgentService) -> None:
    events = await run(agent, "python3 -c \"x=[]\nwhile True: x.append(bytearray(8*1024*1024))\"", memory_mb=96)
    ex = exit_of(events)
    assert ex.exit_code != 0
    assert ex.reason is not None and "out of memory" in ex.reason and "96 MB" in ex.reason


async def test_timeout_ends_with_a_clear_reason(agent: AgentService) -> None:
    events = await run(agent, "echo started; sleep 30", timeout_s=1)
    ex = exit_of(events)
    assert ex.reason == "timed out after 1 s" and ex.exit_code != 0
    assert [e.message for e in events if e.type == "log"] == ["started"]


async def test_output_and_exit_code_are_reported(agent: AgentService) -> None:
    events = await run(agent, "echo out; echo err >&2; printf 'no newline'; exit 4")
    logs = [(e.source, e.message) for e in events if e.type == "log"]
    assert logs[0] == ("stdout", "out") and ("stderr", "err") in logs and ("stdout", "no newline") in logs
    ex = exit_of(events)
    assert ex.exit_code == 4 and ex.reason is None


async def test_stop_reports_the_reason(agent: AgentService) -> None:
    sid = f"vm-{uuid.uuid4().hex[:8]}"
    after = agent.events.last_seq
    await agent.create(SandboxRequest(sandbox_id=sid, job_id=sid, script="sleep 60"))
    await agent.stop(sid, StopRequest(reason="stopped by user"))
    evs = [e for e in agent.events.since(after) if e.sandbox_id == sid]
    assert exit_of(evs).reason == "stopped by user"
    assert evs[-1].type == "state" and evs[-1].state == "stopped"


async def test_bad_input_is_refused(agent: AgentService) -> None:
    for bad, match in (
        (dict(script="   "), "script is empty"),
        (dict(script="true", image="no-such"), "unknown image"),
        (dict(script="true", memory_mb=1), "memory limit"),
        (dict(script="true", no_sleep=True), "no_sleep"),
    ):
        with pytest.raises(ValidationError, match=match):
            await agent.create(SandboxRequest(sandbox_id=f"vm-{uuid.uuid4().hex[:8]}", job_id="j", **bad))  # type: ignore[arg-type]
