"""Job commands ``list``, ``status``, ``logs``, ``stop``, ``sync``, ``set``, ``resize``, and their helpers."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mags.cli.context import State, pass_state, usage_error
from mags.cli.output import (
    Spinner,
    ago,
    echo_err,
    emit_log,
    print_fields,
    print_json,
    print_table,
    spinner,
)

if TYPE_CHECKING:
    from mags.sdk.sync import Mags

STATUS_FIELDS = [
    "request_id",
    "name",
    "workspace_id",
    "status",
    "vm_status",
    "exit_code",
    "error_message",
    "script_duration_ms",
    "persistent",
    "no_sleep",
    "subdomain",
    "vm_id",
    "created_at",
    "started_at",
    "finished_at",
]


# --------------------------------------------------------------------------- helpers
def resolve_job(client: Mags, name_or_id: str) -> dict[str, Any]:
    """The full status of the job a name, workspace or id designates (404 if none)."""
    from mags.sdk.base import job_id_of, looks_like_job_id, not_found

    job = client.find_job(name_or_id)
    if job is None:
        raise not_found(name_or_id)
    if looks_like_job_id(name_or_id) and job_id_of(job) == name_or_id:
        return job  # find_job already read the status
    return client.status(job_id_of(job))


def resolve_id(client: Mags, name_or_id: str) -> str:
    """A job id for a name, workspace or id."""
    from mags.sdk.base import job_id_of, looks_like_job_id, not_found

    if looks_like_job_id(name_or_id):
        return name_or_id
    job = client.find_job(name_or_id)
    if job is None:
        raise not_found(name_or_id)
    return job_id_of(job)


def follow_job(client: Mags, request_id: str, *, waiting: str | None = None, show_system: bool) -> dict:
    """Print a job's output live until it ends; return its final status."""
    spin = Spinner(waiting).start() if waiting else None
    final: dict[str, Any] = {}
    try:
        for event in client.follow_events(request_id):
            if spin is not None:
                spin.stop()
            if event.kind == "log":
                emit_log(event.data, show_system=show_system)
            else:
                final = event.data
    finally:
        if spin is not None:
            spin.stop()
    # a script that exited non-zero by itself has said why; a kill (timeout, out of memory)
    # or a failed start has not: the server's reason is the one line to show
    if final.get("status") == "error" and (final.get("exit_code") is None or final.get("error_message")):
        echo_err(f"error: {final.get('error_message') or 'the job failed'}")
    return final


def script_text(words: tuple[str, ...]) -> str:
    """The script for SCRIPT/COMMAND words.

    One argument is a shell script, sent as it is; several are words the local shell already
    split, so they are re-quoted (``mags run python3 -c 'print(1)'`` runs what it says).
    """
    return words[0] if len(words) == 1 else shlex.join(words)


def parse_env(pairs: tuple[str, ...]) -> dict[str, str]:
    """``-E KEY=VALUE`` options to a dict."""
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise usage_error(f"-E/--env expects KEY=VALUE, got {pair!r}")
        env[key] = value
    return env


def upload_all(client: Mags, files: tuple[str, ...]) -> list[str]:
    """Upload ``-f`` files (with a spinner); return their ids."""
    ids = []
    for path in files:
        with spinner(f"Uploading {Path(path).name}…"):
            ids.append(client.upload_file(path))
    return ids


def exit_code_of(status: dict[str, Any]) -> int:
    from mags.sdk.base import exit_code_for

    return exit_code_for(status)


# --------------------------------------------------------------------------- inspect
def _job_name(job: dict[str, Any]) -> str:
    return job.get("name") or job.get("workspace_id") or ""


JOB_COLUMNS = [
    ("ID", lambda j: j.get("request_id") or j.get("id")),
    ("NAME", _job_name),
    ("STATUS", lambda j: j.get("status")),
    ("EXIT", lambda j: j.get("exit_code")),
    ("CREATED", lambda j: ago(j.get("created_at"))),
]


@click.command("list")
@click.option("--page", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000), help="Jobs per page.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw answer as JSON.")
@pass_state
def list_cmd(state: State, page: int, limit: int, as_json: bool) -> None:
    """List recent jobs, newest first.

    \b
    Examples:
      mags list
      mags list --json | jq -r '.jobs[].request_id'
    """
    data = state.client().list_jobs(page=page, page_size=limit)
    if as_json:
        print_json(data)
        return
    print_table(data.get("jobs") or [], JOB_COLUMNS, empty="No jobs yet. Try: mags run 'echo Hello World'")
    total = data.get("total")
    if isinstance(total, int) and total > page * limit:
        echo_err(f"page {page} of {-(-total // limit)} ({total} jobs); next: mags list --page {page + 1}")


@click.command("status")
@click.argument("name_or_id")
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
@pass_state
def status_cmd(state: State, name_or_id: str, as_json: bool) -> None:
    """Show a job's status (by name, workspace or id).

    \b
    Example:
      mags status myproject
    """
    job = resolve_job(state.client(), name_or_id)
    if as_json:
        print_json(job)
    else:
        print_fields(job, STATUS_FIELDS)


@click.command("logs")
@click.argument("name_or_id")
@click.option("-f", "--follow", is_flag=True, help="Stream new output until the job ends.")
@click.option("--json", "as_json", is_flag=True, help="Print log entries as JSON (one per line with -f).")
@pass_state
def logs_cmd(state: State, name_or_id: str, follow: bool, as_json: bool) -> None:
    """Print a job's output (stdout to stdout, stderr and system lines to stderr).

    \b
    Examples:
      mags logs myproject
      mags logs -f 5b0e7a52-2a4e-4a53-9a43-6f1f3f1f0b11
    """
    client = state.client()
    request_id = resolve_id(client, name_or_id)
    if follow and as_json:
        import json

        for event in client.follow_events(request_id):
            click.echo(json.dumps({"event": event.kind, **event.data}, default=str))
        return
    if follow:
        try:
            follow_job(client, request_id, show_system=True)
        except KeyboardInterrupt:
            return
        return
    data = client.logs(request_id)
    if as_json:
        print_json(data)
        return
    for entry in data.get("logs") or []:
        emit_log(entry)


# --------------------------------------------------------------------------- control
@click.command("stop")
@click.argument("name_or_id")
@pass_state
def stop_cmd(state: State, name_or_id: str) -> None:
    """Stop a job; a persistent workspace is fully synced first.

    \b
    Example:
      mags stop myproject
    """
    client = state.client()
    request_id = resolve_id(client, name_or_id)
    with spinner("Stopping…"):
        client.stop(request_id)
    click.echo(
        f"Stopped {name_or_id} ({request_id})" if name_or_id != request_id else f"Stopped {request_id}"
    )


@click.command("sync")
@click.argument("name_or_id")
@pass_state
def sync_cmd(state: State, name_or_id: str) -> None:
    """Sync a job's workspace to object storage now; the VM keeps running.

    \b
    Example:
      mags sync golden
    """
    client = state.client()
    request_id = resolve_id(client, name_or_id)
    with spinner("Syncing workspace…"):
        client.sync(request_id)
    click.echo(f"Synced workspace of {name_or_id}")


@click.command("set")
@click.argument("name_or_id")
@click.option("--no-sleep/--sleep", "no_sleep", default=None, help="Never auto-sleep / re-enable auto-sleep.")
@click.option("--startup-command", metavar="CMD", help="Command to run whenever the VM wakes.")
@click.option("--json", "as_json", is_flag=True, help="Print the updated job as JSON.")
@pass_state
def set_cmd(
    state: State, name_or_id: str, no_sleep: bool | None, startup_command: str | None, as_json: bool
) -> None:
    """Change a running VM's settings.

    \b
    Examples:
      mags set my-api --no-sleep
      mags set my-api --sleep
      mags set web --startup-command 'python3 -m http.server 8080'
    """
    if no_sleep is None and startup_command is None:
        raise usage_error("give --no-sleep, --sleep and/or --startup-command")
    client = state.client()
    request_id = resolve_id(client, name_or_id)
    job = client.update_job(request_id, no_sleep=no_sleep, startup_command=startup_command)
    if as_json:
        print_json(job)
        return
    if no_sleep is not None:
        click.echo(f"{name_or_id}: auto-sleep {'disabled (always on)' if no_sleep else 'enabled'}")
    if startup_command is not None:
        click.echo(f"{name_or_id}: startup command set")


@click.command("resize")
@click.argument("name")
@click.option("--disk", required=True, type=click.IntRange(min=1), metavar="GB", help="New disk size in GB.")
@click.option("--json", "as_json", is_flag=True, help="Print the new job as JSON.")
@pass_state
def resize_cmd(state: State, name: str, disk: int, as_json: bool) -> None:
    """Resize a workspace's disk, keeping its files (restarts its VM).

    \b
    Example:
      mags resize myproject --disk 10
    """
    with spinner(f"Resizing '{name}' to {disk} GB…"):
        job = state.client().resize(name, disk, timeout=120)
    if as_json:
        print_json(job)
    else:
        click.echo(f"Resized '{name}' to {disk} GB (job {job['request_id']})")


COMMANDS = [list_cmd, status_cmd, logs_cmd, stop_cmd, sync_cmd, set_cmd, resize_cmd]
