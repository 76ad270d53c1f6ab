"""Fixtures: a started runtime per backend (module scope), skipping with a reason where impossible."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from mags.config import Settings, load_settings
from mags.errors import RuntimeUnavailable
from mags.runtime.factory import create_runtime
from mags.runtime.gvisor import find_runsc
from mags.runtime.image import image_is_current, resolve_image
from mags.runtime.namespaces import BaseRuntime

BACKENDS = ["namespaces", "gvisor"]


def runtime_settings(tmp: str, **kw: object) -> Settings:
    return load_settings(data_dir=tmp, pool_size=kw.pop("pool_size", 1), **kw)


def skip_reason(backend: str, settings: Settings) -> str | None:
    if os.geteuid() != 0:
        return "needs root (namespaces, cgroups, mounts)"
    try:
        resolve_image(settings, "standard")
    except Exception as exc:  # noqa: BLE001
        return f"guest image missing ({exc}); run scripts/setup.sh"
    if backend == "gvisor" and find_runsc(settings.runsc_path) is None:
        return "gVisor runsc not installed; run scripts/setup.sh"
    return None


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=BACKENDS)
async def runtime(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[BaseRuntime]:
    backend = request.param
    settings = runtime_settings(str(tmp_path_factory.mktemp(f"rt-{backend}")))
    reason = skip_reason(backend, settings)
    if reason:
        pytest.skip(reason)
    rt = create_runtime(settings, name=backend)
    try:
        await rt.start()
    except RuntimeUnavailable as exc:
        pytest.skip(f"{backend} unavailable here: {exc}")
    try:
        yield rt
    finally:
        await rt.close()


__all__ = ["runtime", "runtime_settings", "skip_reason", "image_is_current"]
