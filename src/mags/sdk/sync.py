"""``Mags``: the blocking client, method for method compatible with the published SDK."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

from mags.errors import ClientError
from mags.sdk import endpoints as ep
from mags.sdk import flows
from mags.sdk.base import (
    API_PREFIX,
    MAX_STREAM_DROPS,
    STREAM_READ_TIMEOUT_S,
    Call,
    Emit,
    Flow,
    LogDeduper,
    Sleep,
    StreamEvent,
    T,
    build_cron_payload,
    build_job_update,
    build_run_payload,
    check_id,
    decode,
    new_payload,
    timed_out,
    transport_failed,
    unreachable,
)
from mags.sdk.common import ClientConfig, is_event_stream
from mags.sdk.sse import SSEDecoder, to_stream_event


class Mags:
    """Client of a mags server (``MAGS_API_URL``) or the hosted service.

    ``Mags(api_token=None, api_url=None, timeout=30.0)``; the token and URL default to
    ``MAGS_API_TOKEN`` / ``MAGS_API_URL``, then ``~/.mags/config.json``.  Any answer with
    status >= 400 raises :class:`mags.errors.ClientError` with ``status_code`` set.
    """

    def __init__(
        self,
        api_token: str | None = None,
        api_url: str | None = None,
        timeout: float | None = 30.0,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._cfg = ClientConfig.create(api_token, api_url, timeout)
        self.api_url, self.api_token, self.timeout = self._cfg.api_url, self._cfg.api_token, timeout
        self._client = httpx.Client(
            base_url=self.api_url + API_PREFIX,
            headers=self._cfg.headers(),
            timeout=timeout,
            transport=transport,
        )
        self._sleep = time.sleep

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Mags(api_url={self.api_url!r})"

    # ------------------------------------------------------------------ transport
    def _call(self, call: Call) -> Any:
        timeout = self._cfg.timeout_for(call)
        try:
            if call.upload is not None:
                with open(call.upload, "rb") as fh:  # httpx streams the file in 64 KiB chunks
                    files = {"file": (call.upload.name, fh, "application/octet-stream")}
                    resp = self._client.request(call.method, call.path, files=files, timeout=timeout)
            else:
                resp = self._client.request(
                    call.method, call.path, params=call.params, json=call.json, timeout=timeout
                )
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise unreachable(self.api_url) from exc
        except httpx.TimeoutException as exc:
            raise timed_out(self.api_url, self.timeout and self.timeout + call.extra_timeout) from exc
        except httpx.TransportError as exc:
            raise transport_failed(self.api_url, str(exc) or type(exc).__name__) from exc
        return decode(
            resp.status_code, resp.content, has_token=self._cfg.has_token, not_found_ok=call.not_found_ok
        )

    def _drive(self, flow: Flow[T]) -> T:
        return _exhaust(self._steps(flow))

    def _steps(self, flow: Flow[T]) -> Flow[T]:
        """Run a flow's calls and sleeps; pass its emitted items on."""
        reply: Any = None
        try:
            while True:
                step = flow.send(reply)
                reply = None
                if isinstance(step, Call):
                    reply = self._call(step)
                elif isinstance(step, Sleep):
                    self._sleep(step.seconds)
                elif isinstance(step, Emit):
                    yield step
        except StopIteration as stop:
            return stop.value
        finally:
            flow.close()

    # ------------------------------------------------------------------ jobs
    def run(
        self,
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
    ) -> dict:
        """Submit a job; return ``{"request_id": ..., "status": "accepted"}`` at once.

        ``timeout_s``: the script's wall-clock limit in seconds (at most the server's
        ``max_job_seconds``); past it the script is killed and the job ends ``error``.
        """
        payload = build_run_payload(
            script, name=name, workspace_id=workspace_id, base_workspace_id=base_workspace_id,
            persistent=persistent, no_sleep=no_sleep, ephemeral=ephemeral,
            startup_command=startup_command, environment=environment, file_ids=file_ids,
            disk_gb=disk_gb, no_sync=no_sync, rootfs_type=rootfs_type, timeout_s=timeout_s,
        )  # fmt: skip
        return self._call(ep.submit_job(payload))

    def run_and_wait(
        self, script: str, *, timeout: float | None = 300.0, poll_interval: float = 1.0, **opts: Any
    ) -> dict:
        """Submit a job and block until its script ends (long-poll, no fixed-interval polling).

        Returns ``request_id, status, exit_code, duration_ms, logs``; ``timeout=None`` waits
        forever.  ``opts`` are the keyword options of :meth:`run`.  ``timeout`` only bounds
        this wait (as in the published SDK); ``timeout_s=N`` limits the job's own run time on
        the server (it ends ``error``, "timed out after N s").
        """
        payload = build_run_payload(script, **opts)
        return self._drive(flows.run_and_wait(payload, timeout=timeout, poll_interval=poll_interval))

    def wait(self, request_id: str, *, timeout: float | None = 300.0, poll_interval: float = 1.0) -> dict:
        """Block until a submitted job's script ends; same answer as :meth:`run_and_wait`."""
        check_id("request_id", request_id)
        return self._drive(flows.wait_result(request_id, timeout=timeout, poll_interval=poll_interval))

    def wait_for_status(
        self,
        request_id: str,
        until: tuple[str, ...] = ("running", "sleeping", "completed", "error"),
        *,
        timeout: float | None = 30.0,
        poll_interval: float = 1.0,
    ) -> dict:
        """Return a job's status as soon as it is one of ``until`` (or the last one at ``timeout``)."""
        check_id("request_id", request_id)
        flow = flows.wait_status(request_id, tuple(until), timeout=timeout, poll_interval=poll_interval)
        return self._drive(flow)

    def new(
        self,
        name: str,
        *,
        persistent: bool = False,
        base_workspace_id: str | None = None,
        disk_gb: int | None = None,
        timeout: float = 30.0,
        poll_interval: float = 1.0,
        file_ids: list[str] | None = None,
    ) -> dict:
        """Create a sandbox named ``name`` and wait until it runs (``mags new <name> [-p]``).

        Local disk only unless ``persistent=True``.  Returns ``{"request_id", "status", ...}``.
        """
        payload = new_payload(name, persistent, base_workspace_id, disk_gb, file_ids)
        return self._drive(flows.new(name, payload, timeout=timeout, poll_interval=poll_interval))

    def exec(self, name_or_id: str, command: str, *, timeout: int = 30) -> dict:
        """Run ``command`` in a running/sleeping sandbox; return ``exit_code, output, stderr``."""
        return self._drive(flows.exec_(name_or_id, command, timeout=timeout))

    def stop(self, name_or_id: str) -> dict:
        """Stop a job (name, workspace or id); persistent workspaces are synced first."""
        return self._drive(flows.post_to_job(name_or_id, "stop"))

    def sync(self, name_or_id: str) -> dict:
        """Sync a job's workspace to object storage now; the sandbox keeps running."""
        return self._drive(flows.post_to_job(name_or_id, "sync"))

    def find_job(self, name_or_id: str) -> dict | None:
        """Find a job by name, workspace or id, preferring running/sleeping ones; ``None`` if none."""
        return self._drive(flows.find_job(name_or_id))

    def url(self, name_or_id: str, *, port: int = 8080) -> dict:
        """Enable public URL access to ``port`` of a job's sandbox; the answer has ``url``."""
        return self._drive(flows.url(name_or_id, port=port))

    def resize(
        self, workspace: str, disk_gb: int, *, timeout: float = 30.0, poll_interval: float = 1.0
    ) -> dict:
        """Give a workspace a ``disk_gb`` disk: stop its sandbox, start a new persistent one."""
        payload = new_payload(workspace, True, None, disk_gb, None)
        return self._drive(flows.resize(workspace, payload, timeout=timeout, poll_interval=poll_interval))

    def status(self, request_id: str) -> dict:
        """A job's status dict."""
        return self._call(ep.job_status(request_id))

    def logs(self, request_id: str) -> dict:
        """``{"logs": [{"seq", "timestamp", "source", "message"}...]}``, every page of them."""
        check_id("request_id", request_id)
        return self._drive(flows.all_logs(request_id))

    def list_jobs(self, *, page: int = 1, page_size: int = 20) -> dict:
        """``{"jobs": [...], "total", "page", "page_size"}``, newest first."""
        return self._call(ep.list_jobs(page, page_size))

    def update_job(
        self, request_id: str, *, startup_command: str | None = None, no_sleep: bool | None = None
    ) -> dict:
        """Change ``startup_command`` and/or ``no_sleep`` of a job (id or name); return the job."""
        body = build_job_update(startup_command=startup_command, no_sleep=no_sleep)
        return self._drive(flows.update_job(request_id, body))

    def enable_access(self, request_id: str, *, port: int = 8080) -> dict:
        """Port 22: SSH access details; any other port: a public URL."""
        return self._call(ep.enable_access(request_id, port))

    def usage(self, *, window_days: int = 30) -> dict:
        """Aggregated usage: ``total_jobs``, ``vm_seconds``, ..."""
        return self._call(ep.usage(window_days))

    # ------------------------------------------------------------------ logs streaming
    def follow_events(self, request_id: str, *, poll_interval: float = 1.0) -> Iterator[StreamEvent]:
        """Stream a job live: ``StreamEvent("log", entry)``... then ``StreamEvent("end", status)``.

        Re-opens a dropped stream without repeating entries; falls back to polling when the
        server does not speak server-sent events.
        """
        check_id("request_id", request_id)
        dedupe, drops = LogDeduper(), 0
        while True:
            progressed = timed_out_quietly = False
            try:
                with self._client.stream(
                    "GET",
                    f"/mags-jobs/{request_id}/logs",
                    params=ep.follow_params(dedupe.last_seq),
                    headers={"Accept": "text/event-stream"},
                    timeout=httpx.Timeout(self.timeout, connect=10.0, read=STREAM_READ_TIMEOUT_S),
                ) as resp:
                    if resp.status_code >= 400 or not is_event_stream(resp.headers):
                        resp.read()
                        initial = decode(resp.status_code, resp.content, has_token=self._cfg.has_token)
                        poll = flows.poll_logs(
                            request_id, dedupe, initial=initial, poll_interval=poll_interval
                        )
                        yield from (step.item for step in self._steps(poll))
                        return
                    dedupe.restart()
                    decoder = SSEDecoder()
                    for line in resp.iter_lines():
                        msg = decoder.feed(line)
                        event = to_stream_event(msg) if msg is not None else None
                        if event is None:
                            continue
                        if event.kind == "end":
                            yield event
                            return
                        if dedupe.accept(event.data):
                            progressed = True
                            yield event
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                raise unreachable(self.api_url) from exc
            except httpx.ReadTimeout:
                timed_out_quietly = True  # a quiet job; just re-open
            except (httpx.ReadError, httpx.RemoteProtocolError):
                pass
            drops = 0 if progressed or timed_out_quietly else drops + 1
            if drops > MAX_STREAM_DROPS:
                raise ClientError(f"log stream of job {request_id} keeps closing without an end event")
            if drops:
                self._sleep(min(0.1 * 2**drops, 2.0))

    def follow_logs(self, request_id: str) -> Iterator[dict]:
        """Yield a job's log entries live until it ends; the generator returns the final status."""
        for event in self.follow_events(request_id):
            if event.kind == "end":
                return event.data
            yield event.data
        return {}

    # ------------------------------------------------------------------ files & workspaces
    def upload_file(self, file_path: str | Path) -> str:
        """Upload a file (streamed from disk, max 100 MB); return its ``file_id``."""
        return self._call(ep.upload(file_path))["file_id"]

    def upload_files(self, file_paths: list[str | Path]) -> list[str]:
        """Upload several files; return their ids in order."""
        return [self.upload_file(p) for p in file_paths]

    def list_workspaces(self) -> dict:
        """``{"workspaces": [...], "total": N}``."""
        return self._call(ep.list_workspaces())

    def delete_workspace(self, workspace_id: str, *, force: bool = False) -> dict:
        """Delete a workspace and its stored data; an idle VM on it is stopped first.

        409 while a script still runs on it, unless ``force`` (then that job is stopped too).
        """
        return self._call(ep.delete_workspace(workspace_id, force))

    # ------------------------------------------------------------------ URL aliases
    def url_alias_create(self, subdomain: str, workspace_id: str, domain: str | None = None) -> dict:
        """Give a workspace a stable URL ``<subdomain>.<domain>``; returns ``id, subdomain, url``."""
        return self._call(ep.url_alias_create(subdomain, workspace_id, domain))

    def url_alias_list(self) -> dict:
        """``{"aliases": [...], "total": N}``."""
        return self._call(ep.url_alias_list())

    def url_alias_delete(self, subdomain: str) -> dict:
        """Remove a URL alias."""
        return self._call(ep.url_alias_delete(subdomain))

    # ------------------------------------------------------------------ cron
    def cron_create(
        self,
        name: str,
        cron_expression: str,
        script: str,
        *,
        workspace_id: str | None = None,
        environment: dict[str, str] | None = None,
        persistent: bool = False,
    ) -> dict:
        """Schedule ``script`` on a 5-field cron expression; return the cron job."""
        payload = build_cron_payload(
            name,
            cron_expression,
            script,
            workspace_id=workspace_id,
            environment=environment,
            persistent=persistent,
        )
        return self._call(ep.cron_create(payload))

    def cron_list(self) -> dict:
        """``{"cron_jobs": [...]}``."""
        return self._call(ep.cron_list())

    def cron_get(self, cron_id: str) -> dict:
        """One cron job."""
        return self._call(ep.cron_get(cron_id))

    def cron_update(self, cron_id: str, **updates: Any) -> dict:
        """Change any field of a cron job, e.g. ``enabled=False``."""
        return self._call(ep.cron_update(cron_id, updates))

    def cron_delete(self, cron_id: str) -> dict:
        """Delete a cron job."""
        return self._call(ep.cron_delete(cron_id))

    # ------------------------------------------------------------------ auth (mags extensions)
    def whoami(self) -> dict:
        """``{"user", "admin", "token_name"}`` of the current token."""
        return self._call(ep.whoami())

    def token_create(self, *, name: str | None = None, user: str | None = None, admin: bool = False) -> dict:
        """Create an API token (admins may create them for other users); the secret is in ``token``."""
        return self._call(ep.token_create(name, user, admin))

    def token_list(self) -> dict:
        """``{"tokens": [...]}`` (never the secrets)."""
        return self._call(ep.token_list())

    def token_revoke(self, token_id: str) -> dict:
        """Revoke a token."""
        return self._call(ep.token_revoke(token_id))


def _exhaust(steps: Flow[T]) -> T:
    """Run a non-streaming flow to its return value."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value
