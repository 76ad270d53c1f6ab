"""``mags server``: run the control plane, host agent and proxies in this process."""

from __future__ import annotations

import os
from pathlib import Path

import click

from mags.cli.context import CliError


@click.command("server")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="State directory (default /var/lib/mags for root).",
)
@click.option("--host", help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), help="API port (default 8090).")
@click.option(
    "--runtime", type=click.Choice(["auto", "namespaces", "gvisor"]), help="Isolation runtime (default auto)."
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TOML settings file.",
)
def server_cmd(
    data_dir: Path | None, host: str | None, port: int | None, runtime: str | None, config_file: Path | None
) -> None:
    """Run a mags server (API, scheduler, local agent) until interrupted.

    Settings come from --config / MAGS_CONFIG, then MAGS_* variables, then these flags.
    Run it as root (or with sudo): sandboxes need namespaces, cgroups and mounts.

    \b
    Examples:
      mags server
      mags server --host 0.0.0.0 --port 8090 --data-dir /srv/mags
      export MAGS_API_URL=http://127.0.0.1:8090   # then, in another shell: mags run 'echo hi'
    """
    # first, before anything is written: the server's files (tenants' data, tokens, logs) are
    # for root only (the same umask as core/bootstrap.py's, without importing the server here)
    os.umask(0o077)
    from mags.config import load_settings

    settings = load_settings(config_file, data_dir=data_dir, host=host, port=port, runtime=runtime)
    try:
        from mags.server import serve
    except ImportError as exc:
        raise CliError(f"the mags server is not available in this installation ({exc})") from exc
    serve(settings)


COMMANDS = [server_cmd]
