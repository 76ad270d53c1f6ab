"""A crash never loses an accepted job: real ``mags server`` processes killed under load.

Eight client threads submit short jobs while the test kills the server (SIGKILL) early, in
mid-stream and right after a burst, or stops it with SIGTERM; the server then restarts on the
same data directory.  Checked for every ``request_id`` the API answered ``accepted``:

* it is still there and reaches ``completed``/``error`` within a bound (none stuck);
* it ends ``error`` only if its history shows it ``running`` before the kill;
* a job that had not started before the kill completes after the restart, with a "requeued"
  entry in its history if it had been assigned to the agent;
* no script ran twice: at most one start in its history and its output line at most once
  (exactly once when completed) -- and, host-side, a job whose script the agent recorded as
  spawned before the kill (``<data_dir>/spawned``, written before every spawn) is never
  requeued.  The logs of a run cut short by the crash are lost with it, so the logs alone
  cannot show a second run; the spawn records, the unit tests in
  tests/unit/scheduler/test_crash_requeue.py and the agent's refusal to spawn a recorded
  sandbox again cover that.

The agent runs inside ``mags server`` (the embedded default): a standalone agent process does
not exist yet, so "the agent dies" is tested by killing the sandbox launchers it started.
Uses the namespaces runtime only (each scenario is a restart; gVisor would only be slower).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from mags.scheduler.changes import REQUEUE_REASON, SPAWNED_REASON
from tests.integration.server_fixture import ServerProc
from tests.security.conftest import start_server

DRAIN_S = 60.0  # every accepted job ends within this after the restart
THREADS = 8


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    srv = start_server(tmp_path_factory, "namespaces")
    try:
        yield srv
    finally:
        srv.stop(signal.SIGTERM)


@pytest.fixture(scope="module")
def token(server: ServerProc) -> str:
    # the admin: tenant quotas (20 live sandboxes) would refuse most of a burst, and refusals
    # are not what this module is about
    return server.admin_token


# ---------------------------------------------------------------------------- submitting
@dataclass
class Submitters:
    """Client threads submitting ``echo <tag>-<n>; sleep <s>`` jobs until told to stop or refused."""

    server: ServerProc
    token: str
    tag: str
    total: int
    sleep_s: float = 0.2
    accepted: dict[str, int] = field(default_factory=dict)  # request id -> job number
    first: threading.Event = field(default_factory=threading.Event)
    _numbers: Iterator[int] = field(default_factory=itertools.count)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Submitters:
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(THREADS)]
        for t in self._threads:
            t.start()
        return self

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=f"{self.server.url}/api/v1", headers=headers, timeout=30) as client:
            while not self._stop.is_set():
                with self._lock:
                    n = next(self._numbers)
                if n >= self.total:
                    return
                script = f"echo {self.tag}-{n}; sleep {self.sleep_s}"
                try:
                    # 1 GB scratch disks: a burst must fit the host's disk budget (see the report
                    # of a launch refused for space: that job ends `error`, crash or not)
                    r = client.post("/mags-jobs", json={"script": script, "disk_gb": 1})
                except httpx.HTTPError:
                    return  # the server is gone: whatever was not answered was not accepted
                if r.status_code != 200:
                    return
                body = r.json()
                assert body["status"] == "accepted", body
                with self._lock:
                    self.accepted[body["request_id"]] = n
                self.first.set()

    def count(self) -> int:
        with self._lock:
            return len(self.accepted)

    def join(self, stop: bool = True) -> None:
        """Wait for the threads (told to stop first unless ``stop`` is False)."""
        if stop:
            self._stop.set()
        for t in self._threads:
            t.join(120)


# ---------------------------------------------------------------------------- host side
def processes_using(path: Path) -> list[int]:
    """Pids whose command line mentions ``path`` (the sandbox launchers of that data dir)."""
    needle = str(path).encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline and int(entry) != os.getpid():
            found.append(int(entry))
    return found


def wait_port_free(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
        time.sleep(0.05)


def spawn_records(srv: ServerProc) -> dict[str, str]:
    """job id -> sandbox id of every script the agent recorded as spawned (before the spawn)."""
    out = {}
    root = srv.data_dir / "spawned"
    for path in root.iterdir() if root.exists() else ():
        try:
            out[json.loads(path.read_text())["job_id"]] = path.name
        except (OSError, ValueError, KeyError):
            continue  # cut short by the kill: its spawn had not happened
    return out


def kill_and_restart(srv: ServerProc, sig: int) -> tuple[float, dict[str, str]]:
    """Stop the server with ``sig``; returns (when it was dead, spawn records then); restarts it."""
    assert srv.proc is not None
    srv.proc.send_signal(sig)
    srv.proc.wait(60)
    dead_at = time.time()
    records = spawn_records(srv)
    # PDEATHSIG: no sandbox outlives the server that started it
    deadline = time.monotonic() + 10
    while (left := processes_using(srv.data_dir)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"processes of the dead server still running: {left}"
    wait_port_free(srv.port)
    wait_port_free(int(srv.extra_env["MAGS_PROXY_PORT"]))
    srv.start()
    return dead_at, records


# ---------------------------------------------------------------------------- checking
def ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()  # 3.11 reads the "Z"


@dataclass
class Outcome:
    accepted: int = 0
    completed: int = 0
    error_started: int = 0  # ended error, had started before the stop
    requeued: int = 0
    recorded: int = 0  # the agent's spawn record says it ran before the stop
    unreported: int = 0  # ... and only the record told the restarted server that it had started

    def __str__(self) -> str:
        return (
            f"accepted {self.accepted}, completed {self.completed}, ended error after starting "
            f"{self.error_started}, requeued {self.requeued} (spawn records at the stop: {self.recorded}, "
            f"of which the database had not seen the start: {self.unreported})"
        )


def wait_terminal(client: httpx.Client, ids: list[str]) -> dict[str, dict[str, Any]]:
    """Every job's final status (with history); fails if one is lost or not done in time."""
    done: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + DRAIN_S
    while len(done) < len(ids):
        for rid in ids:
            if rid in done:
                continue
            r = client.get(f"/mags-jobs/{rid}/status")
            assert r.status_code == 200, f"accepted job {rid} lost: {r.status_code} {r.text}"
            st = r.json()
            if st["status"] in ("completed", "error"):
                done[rid] = st
        if len(done) < len(ids):
            if time.monotonic() > deadline:
                stuck = {rid: client.get(f"/mags-jobs/{rid}/status").json() for rid in ids if rid not in done}
                first = next(iter(stuck.values()))
                raise AssertionError(f"{len(stuck)} accepted job(s) stuck, e.g. {first}")
            time.sleep(0.2)
    return done


def check(
    srv: ServerProc, token: str, subs: Submitters, stopped_at: float, records: dict[str, str]
) -> Outcome:
    headers = {"Authorization": f"Bearer {token}"}
    out = Outcome(accepted=len(subs.accepted))
    with httpx.Client(base_url=f"{srv.url}/api/v1", headers=headers, timeout=30) as client:
        final = wait_terminal(client, list(subs.accepted))
        for rid, n in subs.accepted.items():
            st = final[rid]
            history = st["history"]
            before = [h for h in history if ts(h["timestamp"]) <= stopped_at + 0.002]
            started_before = any(h["status"] == "running" for h in before)
            assigned_before = any((h["reason"] or "").startswith("assigned to agent") for h in before)
            requeued = any(h["reason"] == REQUEUE_REASON for h in history)
            starts = sum(1 for h in history if (h["reason"] or "").startswith("sandbox started"))
            marker = f"{subs.tag}-{n}"
            lines = [x["message"] for x in client.get(f"/mags-jobs/{rid}/logs").json()["logs"]]
            what = f"job {rid} ({marker}): {st['status']} {st['error_message']!r}, history {history}"
            assert starts <= 1, f"ran twice: {what}"
            assert lines.count(marker) <= 1, f"ran twice: {what}"
            if st["status"] == "error":
                assert started_before, f"ended error without having started before the stop: {what}"
                out.error_started += 1
            else:
                assert st["exit_code"] == 0 and lines.count(marker) == 1, what
                out.completed += 1
            if not started_before:
                assert st["status"] == "completed", what
                if assigned_before:
                    assert requeued, f"claimed before the stop, but no requeue entry: {what}"
            if requeued:
                out.requeued += 1
                assert not started_before and rid not in records, f"requeued although it ran: {what}"
            if any(h["reason"] == SPAWNED_REASON for h in history):
                assert rid in records and st["status"] == "error", what
                out.unreported += 1
            if rid in records:
                out.recorded += 1
                assert not requeued and starts == 1, f"spawned before the stop: {what}"
    print(f"\n[{subs.tag}] {out}")
    return out


# ---------------------------------------------------------------------------- scenarios
def test_sigkill_early_after_the_first_submits(server: ServerProc, token: str) -> None:
    subs = Submitters(server, token, "early", total=400).start()
    assert subs.first.wait(30)
    time.sleep(0.05)
    stopped_at, records = kill_and_restart(server, signal.SIGKILL)
    subs.join()
    out = check(server, token, subs, stopped_at, records)
    assert out.accepted > 0


def test_sigkill_mid_stream(server: ServerProc, token: str) -> None:
    subs = Submitters(server, token, "mid", total=1000).start()
    deadline = time.monotonic() + 60
    while subs.count() < 80 and time.monotonic() < deadline:
        time.sleep(0.002)
    stopped_at, records = kill_and_restart(server, signal.SIGKILL)
    subs.join()
    out = check(server, token, subs, stopped_at, records)
    assert out.accepted >= 80


def test_sigkill_right_after_a_burst(server: ServerProc, token: str) -> None:
    subs = Submitters(server, token, "burst", total=120, sleep_s=0.5).start()
    subs.join(stop=False)  # every job answered; most not started yet
    stopped_at, records = kill_and_restart(server, signal.SIGKILL)
    out = check(server, token, subs, stopped_at, records)
    assert out.accepted == 120
    assert out.requeued + out.completed > 0


def test_sigterm_keeps_pending_jobs(server: ServerProc, token: str) -> None:
    subs = Submitters(server, token, "term", total=120, sleep_s=0.5).start()
    subs.join(stop=False)
    stopped_at, records = kill_and_restart(server, signal.SIGTERM)
    out = check(server, token, subs, stopped_at, records)
    assert out.accepted == 120


def _launchers(srv: ServerProc) -> list[int]:
    """The sandbox launcher processes (``mags-sandbox ... launch``) of ``srv``'s agent."""
    pids = []
    for pid in processes_using(srv.data_dir):
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args and b"mags-sandbox" in args[0] and b"launch" in args[1:2]:
            pids.append(pid)
    return pids


def test_killed_sandboxes_end_with_a_reason_and_the_queue_keeps_draining(
    server: ServerProc, token: str
) -> None:
    """What the agent can lose without the server: its sandboxes, killed under load."""
    subs = Submitters(server, token, "sbkill", total=80, sleep_s=1.0).start()
    killed: set[int] = set()
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        for pid in _launchers(server):
            if pid not in killed and len(killed) < 25:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.add(pid)
                except ProcessLookupError:
                    pass
        time.sleep(0.1)
    subs.join()
    assert killed, "no sandbox launcher was seen"
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=f"{server.url}/api/v1", headers=headers, timeout=30) as client:
        final = wait_terminal(client, list(subs.accepted))
        errors = {rid: st for rid, st in final.items() if st["status"] == "error"}
        for rid, st in errors.items():
            reason = st["error_message"] or ""
            assert reason and "server restarted" not in reason, f"job {rid}: {st}"
        print(
            f"\n[sbkill] {len(killed)} launchers killed; {len(final)} jobs: {len(final) - len(errors)} "
            f"completed, {len(errors)} error, reasons {sorted({st['error_message'] for st in errors.values()})}"
        )
        # and the agent still runs jobs
        after = Submitters(server, token, "after", total=20).start()
        after.join(stop=False)
        assert len(after.accepted) == 20
        final = wait_terminal(client, list(after.accepted))
        assert all(st["status"] == "completed" for st in final.values()), final
