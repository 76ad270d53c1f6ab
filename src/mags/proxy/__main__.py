"""``python -m mags.proxy [--config FILE]``: run the edge proxy alone (see proxy/standalone.py).

``--child --fds N[,M]`` is how ``mags server`` runs its proxy (proxy/server.py, ``ProxyProcess``):
settings as the first line of stdin, listening sockets inherited, route labels to forget on the
following lines, EOF on stdin to stop.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from mags.config import Settings, load_settings
from mags.errors import ConfigError


def read_line(fd: int) -> bytes:
    """One line from ``fd``, read byte by byte: what follows it stays in the pipe for the loop."""
    out = bytearray()
    while True:
        b = os.read(fd, 1)
        if not b or b == b"\n":
            return bytes(out)
        out += b


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mags.proxy", description="The mags edge proxy (public URLs).")
    parser.add_argument("--config", help="TOML settings file (else MAGS_CONFIG / MAGS_* variables)")
    parser.add_argument("--port", type=int, help="listen on this port (default: proxy_port)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--fds", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    fds: list[int] | None = None
    try:
        if args.child:
            settings = Settings.model_validate_json(read_line(0))
            fds = [int(fd) for fd in (args.fds or "").split(",") if fd]
        else:
            settings = load_settings(args.config, proxy_port=args.port)
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from mags.proxy.standalone import serve_child, serve_proxy

    try:
        import uvloop  # the proxy spawns no processes, so uvloop is safe (and faster) here

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover
        runner = asyncio.Runner()
    try:
        with runner:
            runner.run(serve_proxy(settings) if fds is None else serve_child(settings, fds))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
