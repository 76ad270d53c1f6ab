"""``python -m mags.proxy [--config FILE]``: run the edge proxy alone (see proxy/standalone.py)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from mags.config import load_settings
from mags.errors import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mags.proxy", description="The mags edge proxy (public URLs).")
    parser.add_argument("--config", help="TOML settings file (else MAGS_CONFIG / MAGS_* variables)")
    parser.add_argument("--port", type=int, help="listen on this port (default: proxy_port)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config, proxy_port=args.port)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from mags.proxy.standalone import serve_proxy

    try:
        import uvloop  # the proxy spawns no processes, so uvloop is safe (and faster) here

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover
        runner = asyncio.Runner()
    try:
        with runner:
            runner.run(serve_proxy(settings))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
