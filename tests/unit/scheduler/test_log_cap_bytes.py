"""The per-job byte cap on logs: in the state applier (what is stored) and in the agent (what is kept)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from workspaces.helpers import eventually, submit

from mags.agent.events import EventLog
from mags.agent.service import AgentService
from mags.core.logcap import TRUNCATED_KEY, cut_bytes, cut_text, line_bytes, truncation_message
from mags.runtime.protocol import Output
from mags.server import ControlPlane
from scheduler.fake_agent import FakeAgentClient
from scheduler.helpers import api_client, make_settings, running_control_plane, user_token

CAP = 2000  # bytes of log per job in these tests


@pytest.fixture
def agent() -> FakeAgentClient:
    return FakeAgentClient()


@pytest.fixture
async def cp(tmp_path: Path, agent: FakeAgentClient) -> AsyncIterator[ControlPlane]:
    settings = make_settings(tmp_path, max_log_lines=1000, max_log_bytes=CAP)
    async with running_control_plane(settings, [agent]) as plane:
        yield plane


@pytest.fixture
async def alice(cp: ControlPlane) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(cp, await user_token(cp, "alice")) as client:
        yield client


async def running_job(client: httpx.AsyncClient, agent: FakeAgentClient) -> tuple[str, str]:
    """A job whose output the test writes itself (as the agent would): (job id, sandbox id)."""
    job = await submit(client, "sleep infinity")
    req = await eventually(lambda: next((r for r in agent.created if r.job_id == job), None))
    return job, req.sandbox_id


def say(
    agent: FakeAgentClient, sid: str, job: str, message: str, source: str = "stdout", **fields: Any
) -> None:
    agent.emit("log", sid, job, source=source, message=message, **fields)


async def logs(cp: ControlPlane, client: httpx.AsyncClient, job: str) -> list[dict[str, Any]]:
    await cp.applier.drain()
    r = await client.get(f"/mags-jobs/{job}/logs")
    assert r.status_code == 200
    return list(r.json()["logs"])


async def history(client: httpx.AsyncClient, job: str) -> list[str]:
    return [h["reason"] for h in (await client.get(f"/mags-jobs/{job}/status")).json()["history"]]


def output_bytes(entries: list[dict[str, Any]]) -> int:
    return sum(line_bytes(e["message"]) for e in entries if e["source"] != "system")


async def wait_for_lines(
    cp: ControlPlane, client: httpx.AsyncClient, job: str, n: int
) -> list[dict[str, Any]]:
    async def check() -> list[dict[str, Any]] | None:
        entries = await logs(cp, client, job)
        return entries if len(entries) >= n else None

    return await eventually(check)


async def test_the_line_crossing_the_cap_is_cut_and_later_output_dropped(
    cp: ControlPlane, alice: httpx.AsyncClient, agent: FakeAgentClient
) -> None:
    job, sid = await running_job(alice, agent)
    for i in range(30):  # 30 x 101 bytes: the 20th line crosses 2000
        say(agent, sid, job, f"{i:02d}" + "x" * 98)
    say(agent, sid, job, "a line from the agent itself", source="system")  # still kept
    entries = await wait_for_lines(cp, alice, job, 22)
    await asyncio.sleep(0.05)
    entries = await logs(cp, alice, job)
    assert output_bytes(entries) == CAP  # cut to fit exactly
    assert [e["message"][:2] for e in entries[:20]] == [f"{i:02d}" for i in range(20)]
    assert len(entries[19]["message"]) == CAP - 19 * 101 - 1
    assert entries[20] == {**entries[20], "source": "system", "message": truncation_message(CAP)}
    assert entries[21]["message"] == "a line from the agent itself" and len(entries) == 22
    assert f"logs truncated at {CAP} bytes" in await history(alice, job)
    # later output: dropped, no second truncation line or history entry
    say(agent, sid, job, "late")
    await asyncio.sleep(0.05)
    assert len(await logs(cp, alice, job)) == 22
    assert (await history(alice, job)).count(f"logs truncated at {CAP} bytes") == 1


async def test_the_cap_survives_a_restart_of_the_applier(
    cp: ControlPlane, alice: httpx.AsyncClient, agent: FakeAgentClient
) -> None:
    job, sid = await running_job(alice, agent)
    say(agent, sid, job, "y" * 1500)
    await wait_for_lines(cp, alice, job, 1)
    cp.applier._log_bytes.clear()  # as after a restart: the size is read back from job_logs
    say(agent, sid, job, "z" * 1500)
    entries = await wait_for_lines(cp, alice, job, 3)
    assert [len(e["message"]) for e in entries[:2]] == [1500, CAP - 1501 - 1]
    assert entries[2]["message"] == truncation_message(CAP)
    cp.applier._log_bytes.clear()  # and once truncated it stays truncated
    say(agent, sid, job, "late")
    await asyncio.sleep(0.05)
    assert len(await logs(cp, alice, job)) == 3


async def test_the_agents_own_truncation_line_is_recorded_once(
    cp: ControlPlane, alice: httpx.AsyncClient, agent: FakeAgentClient
) -> None:
    job, sid = await running_job(alice, agent)
    say(agent, sid, job, "some output")
    say(agent, sid, job, truncation_message(CAP), source="system", data={TRUNCATED_KEY: CAP})
    say(agent, sid, job, truncation_message(CAP), source="system", data={TRUNCATED_KEY: CAP})
    say(agent, sid, job, "late")
    entries = await wait_for_lines(cp, alice, job, 2)
    await asyncio.sleep(0.05)
    entries = await logs(cp, alice, job)
    assert [(e["source"], e["message"]) for e in entries] == [
        ("stdout", "some output"),
        ("system", truncation_message(CAP)),
    ]
    assert (await history(alice, job)).count(f"logs truncated at {CAP} bytes") == 1


async def test_multibyte_lines_are_cut_on_a_character(
    cp: ControlPlane, alice: httpx.AsyncClient, agent: FakeAgentClient
) -> None:
    job, sid = await running_job(alice, agent)
    say(agent, sid, job, "é" * 1500)  # 3000 bytes: over the cap on its own
    entries = await wait_for_lines(cp, alice, job, 2)
    assert entries[0]["message"] == "é" * ((CAP - 1) // 2)
    assert entries[1]["message"] == truncation_message(CAP)


async def test_the_line_cap_still_applies_and_is_in_the_history(tmp_path: Path) -> None:
    agent = FakeAgentClient()
    settings = make_settings(tmp_path, max_log_lines=5)
    async with running_control_plane(settings, [agent]) as plane:
        client = api_client(plane, await user_token(plane, "alice"))
        async with client:
            job = await submit(client, "spam 10")
            entries = await wait_for_lines(plane, client, job, 6)
            assert entries[-1]["message"] == "log truncated: more than 5 lines" and len(entries) == 6
            assert "logs truncated at 5 lines" in await history(client, job)


# ---------------------------------------------------------------------------- the agent's side
def agent_pump(max_log_bytes: int, max_log_lines: int = 1000) -> tuple[Any, Any, EventLog]:
    """``AgentService._pump_output`` of a stand-in agent: (feed, flush, its event log)."""
    events = EventLog()
    me = SimpleNamespace(
        settings=SimpleNamespace(max_log_lines=max_log_lines, max_log_bytes=max_log_bytes), events=events
    )
    t = SimpleNamespace(req=SimpleNamespace(sandbox_id="vm-1", job_id="job-1"))
    feed, flush = AgentService._pump_output(me, t)  # type: ignore[arg-type]
    return feed, flush, events


async def test_the_agent_keeps_at_most_the_cap_of_a_flood() -> None:
    feed, flush, events = agent_pump(10_000)
    chunk = (b"a" * 1023 + b"\n") * 64  # 64 KiB
    for _ in range(1600):  # 100 MiB of output
        feed(Output("stdout", chunk))
    flush([])
    logged = events.since(0)
    kept = [e for e in logged if e.source == "stdout"]
    assert sum(line_bytes(e.message or "") for e in kept) == 10_000
    assert logged[-1].source == "system" and logged[-1].data == {TRUNCATED_KEY: 10_000}
    assert logged[-1].message == truncation_message(10_000)
    assert len(logged) == len(kept) + 1


async def test_the_agent_cuts_one_endless_line() -> None:
    feed, flush, events = agent_pump(200_000)
    for _ in range(100):  # 6.4 MB without a newline: split every 64 KiB, capped in bytes
        feed(Output("stderr", b"b" * 65536))
    flush(["launcher: an error after the cap"])
    logged = events.since(0)
    assert sum(line_bytes(e.message or "") for e in logged if e.source == "stderr") == 200_000
    assert [e.source for e in logged].count("system") == 1 and logged[-1].source == "system"


async def test_the_agent_line_cap_comes_first_when_lines_are_short() -> None:
    feed, flush, events = agent_pump(10_000, max_log_lines=3)
    feed(Output("stdout", b"1\n2\n3\n4\n5\n"))
    flush([])
    assert [e.message for e in events.since(0)] == ["1", "2", "3", "output truncated after 3 lines"]


# ---------------------------------------------------------------------------- helpers
def test_line_bytes_and_cuts() -> None:
    assert line_bytes("abc") == 4 and line_bytes("é") == 3 and line_bytes("") == 1
    assert cut_text("abcdef", 3) == "abc" and cut_text("abc", 0) == "" and cut_text("abc", -1) == ""
    assert cut_text("éé", 3) == "é"  # never half a character
    assert cut_bytes("aé".encode()[:2], truncated=True) == "a"
    assert cut_bytes("a€".encode()[:3], truncated=True) == "a"
    assert cut_bytes("a€".encode(), truncated=True) == "a€"
    assert cut_bytes(b"a\xff", truncated=False) == "a\ufffd"  # invalid output stays visible


async def test_agent_event_log_is_bounded_in_bytes() -> None:
    from mags.agent.events import EventLog

    log = EventLog(capacity=1_000_000, max_bytes=1024 * 1024)
    line = "x" * 64 * 1024
    for _ in range(200):  # 12.5 MiB of log lines
        log.emit("log", "sb", "job", source="stdout", message=line)
    kept = log.since(0)
    assert 0 < len(kept) <= 16  # about 1 MiB of them
    assert kept[-1].seq == 200 and log.last_seq == 200  # the newest are the ones kept
