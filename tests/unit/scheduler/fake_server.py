"""Run ``mags.server.serve`` with the in-memory fake agent instead of the real local agent.

    python tests/unit/scheduler/fake_server.py DATA_DIR PORT

Used by the serve() tests (and handy to measure the control plane alone).
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mags.config import load_settings
from scheduler.fake_agent import FakeAgentClient


class FakeHandle:
    """What ``start_local_agent`` returns: ``.client`` and ``async .stop()``."""

    def __init__(self) -> None:
        self.client = FakeAgentClient("fake-local")
        self.runtime = "fake"

    async def stop(self, keep: object = ()) -> None:
        await self.client.stop_all("agent stopping")


async def start_local_agent(settings: object) -> FakeHandle:
    return FakeHandle()


def main() -> None:
    module = types.ModuleType("mags.agent.local")
    module.start_local_agent = start_local_agent  # type: ignore[attr-defined]
    sys.modules["mags.agent.local"] = module
    from mags.server import serve

    serve(load_settings(data_dir=sys.argv[1], port=int(sys.argv[2])))


if __name__ == "__main__":
    main()
