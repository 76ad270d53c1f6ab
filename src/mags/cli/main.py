"""The ``mags`` command: the root group and the entry point."""

from __future__ import annotations

import sys

import click

from mags import __version__
from mags.cli import auth, claude, cron, image, jobs, run, sandbox, server_cmd, tokens, url, workspace
from mags.cli.context import CONTEXT_SETTINGS, MagsGroup, State


@click.group(cls=MagsGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "-v", "--version", prog_name="mags", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Mags: secure sandboxes for AI agents and developers.

    \b
    Examples:
      mags run 'echo Hello World'
      mags run -w myproject -p 'pip install flask'
      mags new dev && mags ssh dev
      mags exec dev 'ls -la /root'
      mags list

    \b
    Server: MAGS_API_URL (default http://127.0.0.1:8090, or the one saved by `mags login`).
    Token:  MAGS_API_TOKEN (wins) or ~/.mags/config.json written by `mags login`.
    Exit codes: 1 error, 2 usage, 3 server unreachable, 4 auth, 5 not found;
    run/exec/ssh exit with the remote command's code.
    """
    ctx.ensure_object(State)


for _module in (run, jobs, sandbox, url, workspace, cron, auth, tokens, server_cmd, image, claude):
    for _command in _module.COMMANDS:
        cli.add_command(_command)


def main() -> None:
    """Console-script entry point: usage errors are one line, like every other error."""
    try:
        rv = cli.main(prog_name="mags", standalone_mode=False)
    except click.UsageError as exc:
        path = exc.ctx.command_path if exc.ctx is not None else "mags"
        click.echo(f"error: {exc.format_message()} (see '{path} --help')", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(1)
    sys.exit(rv if isinstance(rv, int) else 0)
