"""A tenant's output cannot exhaust the shared server: exec answers and job logs are byte-capped.

Each runtime's real server (``sec_server``) with the default caps (``max_exec_output_bytes``
and ``max_log_bytes``, 10 MiB).  Host-side oracles, not what the API says about itself: the
server process's resident memory (``/proc/<pid>/status``, sampled every 10 ms while a 300 MB
exec flood runs) and the size of its database files while a job prints 200 MB.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any, Self

import httpx
import pytest

from mags import Mags
from mags.config import Settings
from mags.core.logcap import line_bytes, truncation_message, truncation_reason
from mags.errors import MagsError
from tests.security.conftest import Tenants

CAP = Settings().max_exec_output_bytes
LOG_CAP = Settings().max_log_bytes
FLOOD_EXEC = "head -c 300000000 /dev/zero | tr '\\0' x"
FLOOD_LOG = "yes $(head -c 65536 /dev/zero | tr '\\0' a) | head -c 200000000"
MAX_RSS_GROWTH = 100 * 1024 * 1024


def rss(pid: int) -> int:
    """Resident memory of a process, in bytes (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


class PeakRss:
    """The highest VmRSS of ``pid`` seen while the ``with`` block runs (sampled in a thread)."""

    def __init__(self, pid: int, interval: float = 0.01) -> None:
        self.pid, self.interval = pid, interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss(self.pid))
            time.sleep(self.interval)

    def __enter__(self) -> Self:
        self.peak = rss(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss(self.pid))


def db_size(data_dir: Path) -> int:
    return sum(
        (data_dir / name).stat().st_size for name in ("mags.db", "mags.db-wal") if (data_dir / name).exists()
    )


def test_exec_flood_is_capped_and_the_server_memory_stays_bounded(tenants: Tenants, alice: Mags) -> None:
    server = tenants.server
    assert server.proc is not None
    name = f"flood-{server.runtime}"
    alice.new(name, timeout=120)
    assert alice.exec(name, "echo warm", timeout=60)["output"] == "warm\n"  # first-exec costs out of the way
    before = rss(server.proc.pid)
    with PeakRss(server.proc.pid) as peak:
        result = alice.exec(name, FLOOD_EXEC, timeout=300)
    growth = peak.peak - before
    print(
        f"\n[{server.runtime}] server RSS {before >> 20} MiB -> peak {peak.peak >> 20} MiB during a 300 MB exec flood"
    )
    assert result["exit_code"] == 0  # the command ran to its end: the rest of its output was read and dropped
    assert len(result["output"]) == CAP and set(result["output"]) == {"x"}
    assert result["truncated"] is True and result["stdout_truncated"] is True
    assert result["stderr_truncated"] is False and len(result["stderr"].encode()) <= CAP
    assert growth < MAX_RSS_GROWTH, f"server RSS grew by {growth >> 20} MiB"
    # the sandbox is fine afterwards
    again = alice.exec(name, "echo still here", timeout=60)
    assert again == {"exit_code": 0, "output": "still here\n", "stderr": ""}
    alice.stop(name)


def test_exec_answer_over_http_carries_the_flags(tenants: Tenants, alice: Mags) -> None:
    name = f"flood2-{tenants.server.runtime}"
    job = alice.new(name, timeout=120)
    r = httpx.post(
        f"{tenants.server.url}/api/v1/mags-jobs/{job['request_id']}/exec",
        json={"command": "head -c 20000000 /dev/zero >&2; echo out", "timeout": 99999},
        headers={"Authorization": f"Bearer {tenants.alice_token}"},
        timeout=120,
    )
    assert r.status_code == 200, r.text  # a timeout over the maximum is clamped, not refused
    answer = r.json()
    assert answer["stdout"] == "out\n" and answer["exit_code"] == 0
    # NUL travels in JSON as \u0000: it counts 6 bytes, so the answer stays about the cap
    assert answer["stderr"] == "\x00" * (CAP // 6)
    assert (answer["truncated"], answer["stdout_truncated"], answer["stderr_truncated"]) == (
        True,
        False,
        True,
    )
    alice.stop(name)


def test_log_flood_is_capped_in_bytes(tenants: Tenants, alice: Mags) -> None:
    server = tenants.server
    before = db_size(server.data_dir)
    started = time.monotonic()
    done = alice.run_and_wait(FLOOD_LOG, timeout=300)
    took = time.monotonic() - started
    assert done["status"] == "completed", done
    entries = alice.logs(done["request_id"])["logs"]
    growth = db_size(server.data_dir) - before
    print(f"\n[{server.runtime}] 200 MB of output in {took:.1f} s: database + WAL grew {growth >> 20} MiB")
    output = [e for e in entries if e["source"] != "system"]
    assert sum(line_bytes(e["message"]) for e in output) <= LOG_CAP
    assert sum(line_bytes(e["message"]) for e in output) > LOG_CAP - 65537  # filled up to the cap
    system = [e["message"] for e in entries if e["source"] == "system"]
    assert system == [truncation_message(LOG_CAP)]
    assert entries[-1]["message"] == truncation_message(LOG_CAP)
    history = [h["reason"] for h in alice.status(done["request_id"])["history"]]
    assert truncation_reason(LOG_CAP) in history
    # host oracle: the database grew by the capped log, not by the flood
    assert growth < 3 * LOG_CAP, f"database grew by {growth >> 20} MiB"


@pytest.fixture(autouse=True)
def _no_leftover_sandboxes(alice: Mags) -> Any:
    yield
    for job in alice.list_jobs(page_size=50)["jobs"]:
        if job.get("vm_status") in ("running", "sleeping"):
            with contextlib.suppress(MagsError):  # best effort: it may have ended meanwhile
                alice.stop(job["request_id"])
