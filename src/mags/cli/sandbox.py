"""Long-lived sandbox commands: ``new``, ``exec``, ``ssh``, ``browser``."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mags.cli.context import CliError, State, pass_state
from mags.cli.jobs import script_text, upload_all
from mags.cli.output import echo_err, print_json, spinner
from mags.errors import ClientError

if TYPE_CHECKING:
    from mags.sdk.sync import Mags


@click.command("new")
@click.argument("name")
@click.option(
    "-p", "--persistent", is_flag=True, help="Sync the workspace to object storage (kept until deleted)."
)
@click.option("--base", metavar="WORKSPACE", help="Start from WORKSPACE's files (read-only base).")
@click.option("--disk", type=click.IntRange(min=1), metavar="GB", help="Disk size in GB (default 2).")
@click.option(
    "-f",
    "--file",
    "files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Upload a file (repeatable).",
)
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for the sandbox to start.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_state
def new_cmd(
    state: State,
    name: str,
    persistent: bool,
    base: str | None,
    disk: int | None,
    files: tuple[str, ...],
    timeout: float,
    as_json: bool,
) -> None:
    """Create a sandbox NAME that stays up for exec and SSH.

    \b
    Examples:
      mags new dev              # local disk only
      mags new dev -p           # persistent workspace
      mags new fork-1 --base golden --disk 10
    """
    client = state.client()
    file_ids = upload_all(client, files)
    with spinner(f"Creating sandbox '{name}'…"):
        job = client.new(
            name,
            persistent=persistent,
            base_workspace_id=base,
            disk_gb=disk,
            timeout=timeout,
            file_ids=file_ids or None,
        )
    if as_json:
        print_json(job)
        return
    click.echo(f"Sandbox '{name}' is {job['status']} ({'persistent' if persistent else 'local disk'})")
    click.echo(f"  ID:   {job['request_id']}")
    click.echo(f"  SSH:  mags ssh {name}")
    click.echo(f"  Exec: mags exec {name} 'ls -la'")
    if not persistent:
        echo_err("Data is on local disk only; use -p to keep it in object storage.", dim=True)


@click.command("exec", context_settings={"allow_interspersed_args": False})
@click.argument("name_or_id")
@click.argument("command", nargs=-1, required=True)
@click.option(
    "--timeout",
    default=300,
    show_default=True,
    type=click.IntRange(min=1),
    help="Seconds before the command is killed.",
)
@click.option("--json", "as_json", is_flag=True, help="Print exit_code/output/stderr as JSON.")
@pass_state
@click.pass_context
def exec_cmd(
    ctx: click.Context, state: State, name_or_id: str, command: tuple[str, ...], timeout: int, as_json: bool
) -> None:
    """Run COMMAND in a running or sleeping sandbox; exit with its exit code.

    Options go before NAME (everything after it is the command).

    \b
    Examples:
      mags exec dev 'ls -la /root'
      mags exec --timeout 600 dev 'pip install -r requirements.txt'
    """
    from mags.sdk.base import exit_code_for

    result = state.client().exec(name_or_id, script_text(command), timeout=timeout)
    if as_json:
        print_json(result)
    else:
        if result["output"]:
            click.echo(result["output"], nl=not result["output"].endswith("\n"))
        if result["stderr"]:
            click.echo(result["stderr"], nl=not result["stderr"].endswith("\n"), err=True)
        if result.get("truncated"):
            cut = [s for s in ("stdout", "stderr") if result.get(f"{s}_truncated")]
            what = " and ".join(cut) or "output"
            echo_err(f"note: {what} truncated (the server keeps at most max_exec_output_bytes of each stream)")
    ctx.exit(exit_code_for({"exit_code": result["exit_code"]}))


def ensure_running(client: Mags, name: str, *, timeout: float = 120.0) -> str:
    """The id of a live sandbox for ``name``; starts one (``mags new``) if it is stopped or absent."""
    from mags.sdk.base import is_alive, job_id_of, looks_like_job_id

    job = client.find_job(name)
    if job is not None and is_alive(job):
        return job_id_of(job)
    workspace = (job or {}).get("workspace_id") or (None if looks_like_job_id(name) else name)
    if not workspace:
        raise ClientError(
            f"job {name} is {(job or {}).get('status', 'gone')} and has no workspace to restart",
            status_code=409,
        )
    persistent = workspace in _persistent_workspaces(client)
    with spinner(f"Starting sandbox '{workspace}'…"):
        return client.new(workspace, persistent=persistent, timeout=timeout)["request_id"]


def _persistent_workspaces(client: Mags) -> set[str]:
    try:
        listed = client.list_workspaces().get("workspaces") or []
    except ClientError:
        return set()
    # local workspaces are listed too: restarting one must not turn it persistent
    return {
        str(w.get("workspace_id") or w.get("id") or w.get("name"))
        for w in listed
        if isinstance(w, dict) and w.get("persistent", True) is not False
    }


def ssh_argv(host: str, port: Any, key_file: str) -> list[str]:
    """The OpenSSH command line for a sandbox."""
    return [
        "ssh", "-i", key_file, "-p", str(port),
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR",
        f"root@{host}",
    ]  # fmt: skip


def _write_key(key: str, path: str | None = None) -> str:
    """Write a private key readable only by us (ssh refuses others)."""
    if path is None:
        fd, path = tempfile.mkstemp(prefix="mags-ssh-", suffix=".key")
    else:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key if key.endswith("\n") else key + "\n")
    os.chmod(path, 0o600)
    return path


@click.command("ssh")
@click.argument("name")
@click.option("--print", "print_only", is_flag=True, help="Print the ssh command instead of connecting.")
@pass_state
@click.pass_context
def ssh_cmd(ctx: click.Context, state: State, name: str, print_only: bool) -> None:
    """Open an SSH session in sandbox NAME (started first if it is stopped).

    \b
    Examples:
      mags ssh dev
      mags ssh dev --print      # e.g. for scp/rsync or an IDE
    """
    from mags.sdk.credentials import config_path

    client = state.client()
    request_id = ensure_running(client, name)
    access = client.enable_access(request_id, port=22)
    host, port, key = access.get("ssh_host"), access.get("ssh_port"), access.get("ssh_private_key")
    if not (host and port and key):
        raise CliError(f"the server did not return SSH access details for '{name}'")
    if print_only:
        keys = config_path().parent / "ssh"
        keys.mkdir(mode=0o700, parents=True, exist_ok=True)
        key_file = _write_key(key, str(keys / f"{request_id}.key"))
        click.echo(shlex.join(ssh_argv(host, port, key_file)))
        return
    if shutil.which("ssh") is None:
        raise CliError("the `ssh` command is not installed; use `mags ssh --print` to see what to run")
    key_file = _write_key(key)
    echo_err(f"Connecting to {host}:{port}… (Ctrl-D or 'exit' to leave)", dim=True)
    try:
        code = subprocess.call(ssh_argv(host, port, key_file))
    finally:
        Path(key_file).unlink(missing_ok=True)
    ctx.exit(code)


BROWSER_SCRIPT = """\
B=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$B" ]; then echo 'no Chromium in this sandbox: install it (apk add chromium / apt-get install -y chromium)' >&2; exit 127; fi
if ! { [ -f /tmp/mags-browser.pid ] && kill -0 "$(cat /tmp/mags-browser.pid)" 2>/dev/null; }; then
  nohup "$B" --headless=new --no-sandbox --disable-gpu --remote-debugging-address=0.0.0.0 \\
    --remote-debugging-port={port} about:blank >/tmp/mags-browser.log 2>&1 &
  echo $! > /tmp/mags-browser.pid; sleep 1
fi
echo ok
"""


@click.command("browser")
@click.argument("name", default="browser")
@click.option("--port", default=9222, show_default=True, type=click.IntRange(1, 65535), help="DevTools port.")
@pass_state
def browser_cmd(state: State, name: str, port: int) -> None:
    """Start a headless Chromium in sandbox NAME and print its DevTools (CDP) URL.

    \b
    Examples:
      mags browser
      mags browser scraper --port 9333
    """
    client = state.client()
    request_id = ensure_running(client, name)
    with spinner("Starting Chromium…"):
        result = client.exec(request_id, BROWSER_SCRIPT.replace("{port}", str(port)), timeout=120)
    if result["exit_code"] != 0:
        raise CliError((result["stderr"] or result["output"]).strip() or "could not start Chromium")
    url = client.url(request_id, port=port).get("url")
    click.echo(f"Browser sandbox '{name}' is running.")
    click.echo(f"  CDP URL: {url}")
    click.echo(f"  Playwright: chromium.connect_over_cdp('{url}')")
    click.echo(f"  Stop it:    mags stop {name}")


COMMANDS = [new_cmd, exec_cmd, ssh_cmd, browser_cmd]
