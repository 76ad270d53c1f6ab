"""What the sync and async clients share, with no I/O: steps, payloads, errors, shaping.

The clients are written "sans-IO": every multi-request operation (``run_and_wait``, ``new``,
``find_job``...) is a generator in :mod:`mags.sdk.flows` that yields :class:`Call` /
:class:`Sleep` / :class:`Emit` steps and is sent back the decoded answers.  ``Mags`` runs the
steps with ``httpx.Client`` and ``time.sleep``; ``AsyncMags`` with ``httpx.AsyncClient`` and
``asyncio.sleep``.  So the logic exists once and is tested once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Generator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from mags.errors import ClientError, ValidationError

T = TypeVar("T")

API_PREFIX = "/api/v1"
ALIVE = ("running", "sleeping")
TERMINAL = ("completed", "error")
STARTED = ("running", "sleeping", "completed", "error")
MAX_LONG_POLL_S = 60  # the server caps ``wait`` here
SUBMIT_WAIT_S = 2.0  # run_and_wait: how long the submit itself may wait for the result
MAX_STREAM_DROPS = 5  # consecutive stream drops without progress before giving up
STREAM_READ_TIMEOUT_S = 75.0  # > server keep-alive interval; a quiet stream is re-opened, not failed
LIST_PAGE_SIZE = 100
MAX_LIST_PAGES = 5  # name resolution looks at the newest 500 jobs at most

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_HEX32 = re.compile(r"^[0-9a-fA-F]{32}$")


# --------------------------------------------------------------------------- steps
@dataclass(frozen=True)
class Call:
    """One HTTP request, relative to ``<api_url>/api/v1``."""

    method: str
    path: str
    params: dict[str, Any] | None = None
    json: Any = None
    upload: Path | None = None  # send this file as multipart field ``file``, streamed
    extra_timeout: float = 0.0  # added to the client's timeout (long-poll, exec)
    not_found_ok: bool = False  # answer ``None`` on 404 instead of raising


@dataclass(frozen=True)
class Sleep:
    """Pause (fallback polling, short back-off)."""

    seconds: float


@dataclass(frozen=True)
class Emit:
    """Hand an item to the caller of a streaming flow (``follow_*``)."""

    item: Any


Step = Call | Sleep | Emit
Flow = Generator[Step, Any, T]


@dataclass(frozen=True)
class StreamEvent:
    """One item of a followed job: ``kind`` is ``"log"`` (a log entry) or ``"end"`` (final status)."""

    kind: str
    data: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- errors
def unreachable(api_url: str) -> ClientError:
    """The error for a refused / failed connection."""
    return ClientError(f"cannot reach mags server at {api_url} — is `mags server` running?", status_code=0)


def timed_out(api_url: str, seconds: float | None) -> ClientError:
    """The error for a request the server did not answer in time."""
    within = f" within {seconds:g}s" if seconds else ""
    return ClientError(f"mags server at {api_url} did not answer{within}", status_code=0)


def transport_failed(api_url: str, detail: str) -> ClientError:
    """The error for a connection that broke mid-request."""
    return ClientError(f"connection to mags server at {api_url} failed: {detail}", status_code=0)


def _error_message(status: int, content: bytes) -> str:
    try:
        body = json.loads(content) if content else None
    except ValueError:
        body = None
    if isinstance(body, dict):
        msg = body.get("error") or body.get("message")
        if msg:
            return str(msg)
        detail = body.get("detail")  # a framework default error that slipped through
        if isinstance(detail, str):
            return detail
        if isinstance(detail, list) and detail and isinstance(detail[0], dict):
            d = detail[0]
            loc = ".".join(str(p) for p in d.get("loc", ())[1:])
            return f"{loc}: {d.get('msg')}" if loc else str(d.get("msg"))
    text = content.decode("utf-8", "replace").strip() if content else ""
    return text[:300] if text and not text.startswith("<") else f"HTTP {status}"


def _error_code(content: bytes) -> str | None:
    try:
        body = json.loads(content) if content else None
    except ValueError:
        return None
    code = body.get("code") if isinstance(body, dict) else None
    return code if isinstance(code, str) and code else None


def error_for(status: int, content: bytes, *, has_token: bool) -> ClientError:
    """Turn an answer with status >= 400 into a ClientError carrying the server's message
    (and its machine ``code``, e.g. ``workspace_in_use``, when the answer has one)."""
    msg = _error_message(status, content)
    if status == 401 and not has_token:
        msg = f"not logged in: run `mags login` or set MAGS_API_TOKEN ({msg})"
    return ClientError(msg, status_code=status, code=_error_code(content))


def decode(status: int, content: bytes, *, has_token: bool, not_found_ok: bool = False) -> Any:
    """Decode a JSON answer or raise; empty bodies (204) decode to ``{}``."""
    if status == 404 and not_found_ok:
        return None
    if status >= 400:
        raise error_for(status, content, has_token=has_token)
    if not content or not content.strip():
        return {}
    try:
        return json.loads(content)
    except ValueError as exc:
        raise ClientError(
            f"server answered HTTP {status} with a body that is not JSON", status_code=status
        ) from exc


# --------------------------------------------------------------------------- payloads
def _check_str(name: str, value: Any, *, allow_empty: bool = False) -> None:
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise ValidationError(f"{name} must be a non-empty string")


def _check_env(environment: Any) -> None:
    if not isinstance(environment, dict) or not all(
        isinstance(k, str) and k and isinstance(v, str) for k, v in environment.items()
    ):
        raise ValidationError("environment must be a dict of str to str")


def build_run_payload(
    script: str,
    *,
    name: str | None = None,
    workspace_id: str | None = None,
    base_workspace_id: str | None = None,
    persistent: bool = False,
    no_sleep: bool = False,
    ephemeral: bool = False,
    startup_command: str | None = None,
    environment: dict[str, str] | None = None,
    file_ids: list[str] | None = None,
    disk_gb: int | None = None,
    no_sync: bool = False,
    rootfs_type: str | None = None,
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """The ``POST /mags-jobs`` body, built like the published SDK (the server validates modes)."""
    _check_str("script", script)
    payload: dict[str, Any] = {"script": script, "type": "inline", "persistent": bool(persistent)}
    if no_sleep:
        payload["no_sleep"] = True
    if no_sync:
        payload["no_sync"] = True
    if name:
        payload["name"] = name
    # The published SDK silently drops the workspace of an ephemeral run; keep that behaviour.
    if not ephemeral and workspace_id:
        payload["workspace_id"] = workspace_id
    if ephemeral:
        payload["ephemeral"] = True
    if base_workspace_id:
        payload["base_workspace_id"] = base_workspace_id
    if startup_command:
        payload["startup_command"] = startup_command
    if environment:
        _check_env(environment)
        payload["environment"] = dict(environment)
    if file_ids:
        if isinstance(file_ids, str) or not all(isinstance(f, str) and f for f in file_ids):
            raise ValidationError("file_ids must be a list of file id strings")
        payload["file_ids"] = list(file_ids)
    if disk_gb:
        if isinstance(disk_gb, bool) or not isinstance(disk_gb, int) or disk_gb < 1:
            raise ValidationError("disk_gb must be a positive integer")
        payload["disk_gb"] = disk_gb
    if rootfs_type:
        payload["rootfs_type"] = rootfs_type
    if timeout_s is not None:  # a mags extension; sent only when asked for
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or not timeout_s > 0:
            raise ValidationError("timeout_s must be a positive number of seconds")
        payload["timeout_s"] = timeout_s
    return payload


def build_job_update(*, startup_command: str | None = None, no_sleep: bool | None = None) -> dict[str, Any]:
    """The ``PATCH /mags-jobs/{id}`` body: only the fields given."""
    body: dict[str, Any] = {}
    if startup_command is not None:
        body["startup_command"] = startup_command
    if no_sleep is not None:
        body["no_sleep"] = bool(no_sleep)
    if not body:
        raise ValidationError("nothing to update: pass startup_command and/or no_sleep")
    return body


def build_cron_payload(
    name: str,
    cron_expression: str,
    script: str,
    *,
    workspace_id: str | None = None,
    environment: dict[str, str] | None = None,
    persistent: bool = False,
) -> dict[str, Any]:
    """The ``POST /mags-cron`` body."""
    _check_str("name", name)
    _check_str("script", script)
    _check_str("cron_expression", cron_expression)
    if len(cron_expression.split()) != 5:
        raise ValidationError("cron_expression must have 5 fields, e.g. '0 */2 * * *'")
    payload: dict[str, Any] = {
        "name": name,
        "cron_expression": cron_expression,
        "script": script,
        "persistent": bool(persistent),
    }
    if workspace_id:
        payload["workspace_id"] = workspace_id
    if environment:
        _check_env(environment)
        payload["environment"] = dict(environment)
    return payload


def check_id(kind: str, value: Any) -> str:
    """Refuse empty ids and ids that would change the URL path."""
    _check_str(kind, value)
    if "/" in value or value in (".", ".."):
        raise ValidationError(f"invalid {kind}: {value!r}")
    return value


def check_port(port: Any) -> int:
    """A TCP port number."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValidationError("port must be an integer between 1 and 65535")
    return port


def new_payload(
    name: str,
    persistent: bool,
    base_workspace_id: str | None,
    disk_gb: int | None,
    file_ids: list[str] | None,
) -> dict[str, Any]:
    """The job behind ``mags new``: ``sleep infinity`` in a persistent VM, no sync unless persistent."""
    check_id("name", name)
    return build_run_payload(
        "sleep infinity", name=name, workspace_id=name, persistent=True, no_sync=not persistent,
        base_workspace_id=base_workspace_id, disk_gb=disk_gb, file_ids=file_ids,
    )  # fmt: skip


# --------------------------------------------------------------------------- jobs
def looks_like_job_id(value: str) -> bool:
    """True for a job id (UUID, with or without dashes): such strings skip name resolution."""
    return bool(_UUID.match(value) or _HEX32.match(value))


def job_id_of(job: dict[str, Any]) -> str:
    """The request id of a job dict (older servers said ``id``)."""
    return str(job.get("request_id") or job.get("id") or "")


def is_alive(job: dict[str, Any]) -> bool:
    """A sandbox that can take exec/SSH/URL traffic (possibly after waking)."""
    return job.get("status") in ALIVE or job.get("vm_status") in ALIVE


def pick_job(jobs: Iterable[dict[str, Any]], name_or_id: str, *, alive_only: bool = False) -> dict | None:
    """Name resolution: name alive, workspace alive, then name any, workspace any (newest first)."""
    jobs = list(jobs)
    alive = [j for j in jobs if is_alive(j)]
    for pool, key in ((alive, "name"), (alive, "workspace_id"), (jobs, "name"), (jobs, "workspace_id")):
        if alive_only and pool is jobs:
            break
        for job in pool:
            if job.get(key) == name_or_id:
                return job
    return None


def not_found(name_or_id: str) -> ClientError:
    """The error when no job matches a name/workspace/id."""
    return ClientError(f"no job found for '{name_or_id}'", status_code=404)


def run_result(request_id: str, status: dict[str, Any], logs: dict[str, Any] | list | None) -> dict[str, Any]:
    """The ``run_and_wait`` answer: ``request_id, status, exit_code, duration_ms, logs``."""
    entries = logs.get("logs", []) if isinstance(logs, dict) else list(logs or [])
    return {
        "request_id": request_id,
        "status": status.get("status"),
        "exit_code": status.get("exit_code"),
        "duration_ms": status.get("script_duration_ms", status.get("duration_ms")),
        "logs": entries,
    }


def exec_result(answer: dict[str, Any]) -> dict[str, Any]:
    """The ``exec`` answer: ``exit_code, output`` (stdout), ``stderr``.

    When the server cut the output at its per-stream limit the answer also says so:
    ``truncated: True`` and ``stdout_truncated`` / ``stderr_truncated``.
    """
    result = {
        "exit_code": answer.get("exit_code"),
        "output": answer.get("stdout", answer.get("output", "")) or "",
        "stderr": answer.get("stderr", "") or "",
    }
    if answer.get("truncated"):
        result["truncated"] = True
        result["stdout_truncated"] = bool(answer.get("stdout_truncated"))
        result["stderr_truncated"] = bool(answer.get("stderr_truncated"))
    return result


def exit_code_for(status: dict[str, Any]) -> int:
    """A process exit code (0..255) for a finished job, for the CLI."""
    code = status.get("exit_code")
    if isinstance(code, int) and not isinstance(code, bool):
        if 0 <= code <= 255:
            return code
        return 128 + min(-code, 127) if code < 0 else 1  # negative = killed by that signal
    return 1 if status.get("status") == "error" else 0


class LogDeduper:
    """Drop log entries seen before a stream was re-opened (by ``seq``, else by position)."""

    def __init__(self) -> None:
        self.last_seq = -1
        self._seen = 0  # entries accepted, for servers that do not number them
        self._position = 0  # position in the current (replayed) stream

    def restart(self) -> None:
        """A new stream begins (it may replay what we already have)."""
        self._position = 0

    def accept(self, entry: dict[str, Any]) -> bool:
        """True if ``entry`` is new."""
        seq = entry.get("seq")
        if isinstance(seq, int) and not isinstance(seq, bool):
            if seq <= self.last_seq:
                return False
            self.last_seq = seq
            return True
        self._position += 1
        if self._position <= self._seen:
            return False
        self._seen = self._position
        return True
