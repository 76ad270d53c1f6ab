"""Pick and build the runtime a server uses: the strongest that works on this host by default."""

from __future__ import annotations

import logging

from mags.config import Settings
from mags.errors import ConfigError, RuntimeUnavailable
from mags.runtime.gvisor import GvisorRuntime, find_runsc, runsc_supports_systrap
from mags.runtime.host import HostEnv
from mags.runtime.namespaces import BaseRuntime, NamespacesRuntime

log = logging.getLogger(__name__)

RUNTIMES: dict[str, type[BaseRuntime]] = {"namespaces": NamespacesRuntime, "gvisor": GvisorRuntime}


def available_runtimes(settings: Settings) -> list[str]:
    """Runtimes that can work here, strongest first (without starting them)."""
    out = []
    runsc = find_runsc(settings.runsc_path)
    if runsc and runsc_supports_systrap(runsc):
        out.append("gvisor")
    out.append("namespaces")
    return out


def create_runtime(settings: Settings, host: HostEnv | None = None, name: str | None = None) -> BaseRuntime:
    """Build (not start) the runtime named by ``name`` or ``settings.runtime``."""
    choice = name or settings.runtime
    if choice == "auto":
        choice = available_runtimes(settings)[0]
    cls = RUNTIMES.get(choice)
    if cls is None:
        raise ConfigError(f"unknown runtime {choice!r} (choose from: auto, {', '.join(RUNTIMES)})")
    return cls(settings, host)


async def start_runtime(settings: Settings, host: HostEnv | None = None) -> BaseRuntime:
    """Build and start the configured runtime; with ``auto``, fall back to the next that works."""
    candidates = available_runtimes(settings) if settings.runtime == "auto" else [settings.runtime]
    last: Exception | None = None
    for name in candidates:
        rt = create_runtime(settings, host, name)
        try:
            await rt.start()
            return rt
        except RuntimeUnavailable as exc:
            log.warning("runtime %s unavailable: %s", name, exc)
            last = exc
            try:
                await rt.close()
            except Exception:  # noqa: BLE001 - best effort after a failed start
                pass
    raise RuntimeUnavailable(f"no sandbox runtime works on this host: {last}")
