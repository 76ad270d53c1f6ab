"""Spawn records: which scripts this agent started, kept on disk across its restarts.

The control plane learns that a script started from the agent's ``started`` event.  If the
agent dies (in the embedded default: with the whole server) after spawning a script but before
that event is committed, the database still shows the job as never started, and putting it
back in the queue would run the script twice.  So the agent writes a record *before* it spawns
a job's script, and after a restart lists the records of its previous run among its sandboxes,
as ``stopped`` with :data:`LOST_REASON` and ``created_at`` = when the script was spawned.  The
control plane then ends those jobs ("server restarted") instead of running them again, and a
second launch of the same sandbox id is refused.  A crash between the record and the spawn errs
on the safe side: that job ends although its script never ran.

One small file per sandbox, ``<data_dir>/spawned/<sandbox_id>`` (JSON: job id, time); no fsync,
since the failure this guards against is the process dying, not the machine (after a power cut
the database's last commits are not durable either).  A record is removed when the agent
forgets its sandbox (:data:`FORGET_AFTER_S` after it stopped); records of a previous run are
listed for that long after the agent starts, then removed.  Records older than
:data:`MAX_AGE_S` are removed at start whatever happened.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

from mags.errors import ValidationError

log = logging.getLogger(__name__)

LOST_REASON = "lost: the agent restarted after starting its script"
FORGET_AFTER_S = 300.0  # how long a stopped sandbox (and its record) stays known
MAX_AGE_S = 86400.0
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # a sandbox id is a file name here


@dataclass(frozen=True)
class SpawnRecord:
    """A script the previous run of this agent started."""

    sandbox_id: str
    job_id: str
    spawned_at: float


class SpawnRecords:
    """The records directory: write before a spawn, forget with the sandbox."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.previous: dict[str, SpawnRecord] = {}  # sandbox id -> record of an earlier run

    def load(self, now: float | None = None) -> dict[str, SpawnRecord]:
        """Read the records an earlier run left (call once, at start); drop very old ones."""
        now = time.time() if now is None else now
        self.root.mkdir(parents=True, exist_ok=True)
        found: dict[str, SpawnRecord] = {}
        for path in self.root.iterdir():
            try:
                if path.name.startswith("."):
                    raise ValueError("not a record")
                data = json.loads(path.read_text())
                spawned_at = float(data["ts"])
                if now - spawned_at > MAX_AGE_S:
                    path.unlink(missing_ok=True)
                    continue
                found[path.name] = SpawnRecord(path.name, str(data["job_id"]), spawned_at)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                # a record cut short by the crash itself: the spawn had not happened yet
                log.warning("ignoring unreadable spawn record %s: %s", path, exc)
                with contextlib.suppress(OSError):
                    path.unlink()
        self.previous = found
        return found

    def write(self, sandbox_id: str, job_id: str) -> None:
        """Record that ``sandbox_id``'s script is about to be spawned (before the spawn)."""
        if not _NAME.fullmatch(sandbox_id):
            raise ValidationError(f"bad sandbox id {sandbox_id!r}")
        # one small write: a record cut short by a crash is unreadable, and then the spawn
        # after it had not happened either
        path, text = self.root / sandbox_id, json.dumps({"job_id": job_id, "ts": time.time()})
        try:
            path.write_text(text)
        except FileNotFoundError:
            self.root.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        self.previous.pop(sandbox_id, None)

    def forget(self, sandbox_id: str) -> None:
        """The sandbox is forgotten: its record is of no more use."""
        self.previous.pop(sandbox_id, None)
        with contextlib.suppress(OSError):
            (self.root / sandbox_id).unlink()

    def forget_previous(self) -> None:
        """Drop the records of earlier runs (the control plane had time to read them)."""
        for sandbox_id in list(self.previous):
            self.forget(sandbox_id)
