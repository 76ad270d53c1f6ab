"""``python -m mags.ssh``: the SSH gateway as its own process (production layout).

It needs only the database (keys, jobs, the ``agents`` table) and network access to the
agents; the control plane issues the keys.  Settings as for ``mags server`` (``MAGS_*``,
``--config``); ``ssh_host`` should name this process's public address.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from pathlib import Path

from mags.config import load_settings
from mags.core.db import create_database
from mags.ssh.agents import REFRESH_S, DbAgentDirectory
from mags.ssh.gateway import SshGateway

log = logging.getLogger("mags.ssh")


async def run_gateway(settings_file: Path | None, data_dir: Path | None, port: int | None) -> None:
    """Serve until SIGTERM/SIGINT."""
    settings = load_settings(settings_file, data_dir=data_dir, ssh_port=port)
    db = create_database(settings.db_url)
    agents = DbAgentDirectory(db)
    await agents.refresh()
    gateway = SshGateway(settings, db, agents)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        bound = await gateway.start()
        print(f"mags ssh gateway ready on {settings.host}:{bound}", flush=True)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), REFRESH_S)
            if agents.stale():
                with contextlib.suppress(Exception):
                    await agents.refresh()
    finally:
        await gateway.close()
        await agents.close()
        await db.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m mags.ssh", description="Run the mags SSH gateway.")
    parser.add_argument("--config", type=Path, help="TOML settings file (as for mags server)")
    parser.add_argument("--data-dir", type=Path, help="where the host key is kept")
    parser.add_argument("--port", type=int, help="port to listen on (default: ssh_port)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    asyncio.run(run_gateway(args.config, args.data_dir, args.port))


if __name__ == "__main__":
    main()
