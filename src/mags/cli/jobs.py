"""Job commands: ``run``, ``list``, ``status``, ``logs``, ``stop``, ``sync``, ``set``, ``resize``."""

from __future__ import annotations

import sys
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
from mags.errors import ClientError

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
    if final.get("status") == "error" and final.get("exit_code") is None:
        echo_err(f"error: {final.get('error_message') or 'the job failed'}")
    return final


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


# --------------------------------------------------------------------------- run
RUN_HELP = """Run SCRIPT in a fresh sandbox, stream its output, exit with its exit code.

\b
Examples:
  mags run 'echo Hello World'
  mags run -w analysis -f data.csv 'python3 /root/data.csv'
  mags run -w myproject -p 'pip install flask'
  mags run -w web -p --url --port 3000 'node server.js'
  mags run -e --json 'uname -a' | jq .exit_code

\b
Workspace modes: none/-e ephemeral; -w NAME local (kept ~10 min); -w NAME -p persistent
(synced, VM stays up, sleeps when idle); --base GOLDEN read-only base; --base G -w FORK fork.
"""


@click.command("run", help=RUN_HELP, context_settings={"allow_interspersed_args": False})
@click.argument("script", nargs=-1, required=True)
@click.option("-w", "--workspace", metavar="NAME", help="Name the job and its workspace (local unless -p).")
@click.option("-n", "--name", metavar="NAME", help="Alias of -w.")
@click.option("-p", "--persistent", is_flag=True, help="Keep the VM alive and sync the workspace.")
@click.option("--base", metavar="WORKSPACE", help="Mount WORKSPACE read-only as the starting point.")
@click.option("--no-sleep", is_flag=True, help="Never auto-sleep this VM (needs -p).")
@click.option(
    "-e", "--ephemeral", is_flag=True, help="No workspace at all (cannot combine with -w/-p/--base)."
)
@click.option(
    "-f",
    "--file",
    "files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Upload a file (repeatable).",
)
@click.option("--url", "want_url", is_flag=True, help="Enable a public URL (needs -p).")
@click.option(
    "--port", default=8080, show_default=True, type=click.IntRange(1, 65535), help="Port for --url."
)
@click.option(
    "--disk", type=click.IntRange(min=1), metavar="GB", help="Workspace disk size in GB (default 2)."
)
@click.option("--startup-command", metavar="CMD", help="Command to run whenever the VM wakes.")
@click.option(
    "-E", "--env", "env", multiple=True, metavar="KEY=VALUE", help="Environment variable (repeatable)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the final result as JSON instead of streaming.")
@click.option("--no-wait", is_flag=True, help="Submit and print the job id; do not wait.")
@click.option("--timeout", type=float, metavar="SECONDS", help="With --json: give up waiting after SECONDS.")
@pass_state
@click.pass_context
def run_cmd(
    ctx: click.Context,
    state: State,
    script: tuple[str, ...],
    workspace: str | None,
    name: str | None,
    persistent: bool,
    base: str | None,
    no_sleep: bool,
    ephemeral: bool,
    files: tuple[str, ...],
    want_url: bool,
    port: int,
    disk: int | None,
    startup_command: str | None,
    env: tuple[str, ...],
    as_json: bool,
    no_wait: bool,
    timeout: float | None,
) -> None:
    if workspace and name and workspace != name:
        raise usage_error("-w and -n are aliases; give one name")
    ws = workspace or name
    if ephemeral and (ws or persistent or base):
        raise usage_error("-e/--ephemeral cannot be combined with -w/-n, -p or --base")
    if no_sleep and not persistent:
        raise usage_error("--no-sleep requires -p/--persistent")
    if want_url and not persistent:
        raise usage_error("--url requires -p/--persistent")
    environment = parse_env(env)
    client = state.client()
    file_ids = upload_all(client, files)
    job = client.run(
        " ".join(script), name=ws, workspace_id=ws, base_workspace_id=base, persistent=persistent,
        no_sleep=no_sleep, ephemeral=ephemeral, startup_command=startup_command,
        environment=environment or None, file_ids=file_ids or None, disk_gb=disk,
    )  # fmt: skip
    request_id = job["request_id"]
    url = _enable_url(client, request_id, port) if want_url else None
    if no_wait:
        if as_json:
            print_json({**job, **({"url": url} if url else {})})
        else:
            click.echo(request_id)
            if url:
                echo_err(f"URL: {url}")
        return
    if as_json:
        with spinner("Running…"):
            result = client.wait(request_id, timeout=timeout)
        print_json({**result, **({"url": url} if url else {})})
        ctx.exit(exit_code_of(result))
    if url:
        echo_err(f"URL: {url}", bold=True)
    try:
        final = follow_job(client, request_id, waiting="Starting sandbox…", show_system=sys.stderr.isatty())
    except KeyboardInterrupt:
        _interrupted(client, request_id, persistent)
        ctx.exit(130)
    ctx.exit(exit_code_of(final))


def _enable_url(client: Mags, request_id: str, port: int) -> str | None:
    with spinner("Waiting for the sandbox to start…"):
        status = client.wait_for_status(request_id, timeout=120)
    if status.get("status") not in ("running", "sleeping"):
        echo_err(f"warning: job is {status.get('status')}; no URL enabled", fg="yellow")
        return None
    return client.enable_access(request_id, port=port).get("url")


def _interrupted(client: Mags, request_id: str, persistent: bool) -> None:
    """Ctrl-C: a throw-away job is stopped; a persistent one keeps running (detach)."""
    if persistent:
        echo_err(
            f"\ndetached; job {request_id} keeps running (mags logs -f {request_id}, mags stop {request_id})"
        )
        return
    try:
        client.stop(request_id)
        echo_err(f"\nstopped job {request_id}")
    except ClientError as exc:
        echo_err(f"\ncould not stop job {request_id}: {exc}")


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


COMMANDS = [run_cmd, list_cmd, status_cmd, logs_cmd, stop_cmd, sync_cmd, set_cmd, resize_cmd]
