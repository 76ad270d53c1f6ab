"""``mags run``: submit a script, stream its output live, exit with its exit code."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from mags.cli.context import State, pass_state, usage_error
from mags.cli.jobs import exit_code_of, follow_job, parse_env, script_text, upload_all
from mags.cli.output import echo_err, print_json, spinner
from mags.errors import ClientError

if TYPE_CHECKING:
    from mags.sdk.sync import Mags


RUN_HELP = """Run SCRIPT in a fresh sandbox, stream its output, exit with its exit code.

\b
Examples:
  mags run 'echo Hello World'
  mags run -w analysis -f data.csv 'python3 /root/data.csv'
  mags run -w myproject -p 'pip install flask'
  mags run -w web -p --url --port 3000 'node server.js'
  mags run -e --json 'uname -a' | jq .exit_code
  mags run --timeout 600 'long-running-script.sh'

Quote the script. Options may also follow it; words that are not mags options (ls -la)
are part of the script, and everything after `--` is.

\b
Workspace modes: none/-e ephemeral; -w NAME local (kept ~10 min); -w NAME -p persistent
(synced, VM stays up, sleeps when idle); --base GOLDEN read-only base; --base G -w FORK fork.
"""


@click.command("run", help=RUN_HELP, context_settings={"ignore_unknown_options": True})
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
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    metavar="SECONDS",
    help="Stop the script after SECONDS; the job ends with an error (\"timed out after N s\").",
)
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
        script_text(script), name=ws, workspace_id=ws, base_workspace_id=base, persistent=persistent,
        no_sleep=no_sleep, ephemeral=ephemeral, startup_command=startup_command,
        environment=environment or None, file_ids=file_ids or None, disk_gb=disk, timeout_s=timeout,
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
            result = client.wait(request_id, timeout=None)  # the server ends it (--timeout, max_job_seconds)
        print_json({**result, **({"url": url} if url else {})})
        ctx.exit(exit_code_of(result))
    if url:
        echo_err(f"URL: {url}", bold=True)
    try:
        final = follow_job(client, request_id, waiting="Running…", show_system=sys.stderr.isatty())
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


COMMANDS = [run_cmd]
