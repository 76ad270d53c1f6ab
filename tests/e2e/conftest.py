"""Fixtures of the end-to-end suite: a real ``mags server`` per runtime, used through the real CLI.

A runtime that cannot run here (no root, no guest image, no ``runsc``) is skipped with the
reason.  A guest image older than its recipe fails instead: the tests would only report its
missing features one by one (``mags image build`` makes it current).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from mags.config import load_settings
from mags.runtime.gvisor import find_runsc
from mags.runtime.image import image_is_current, resolve_image
from tests.integration.server_fixture import ServerProc, free_port


def skip_reason(runtime: str) -> str | None:
    """Why ``runtime`` cannot run sandboxes on this machine (None: it can)."""
    if os.geteuid() != 0:
        return "needs root (sandboxes need namespaces, cgroups and mounts)"
    try:
        resolve_image(load_settings(), "standard")
    except Exception as exc:  # noqa: BLE001 - any reason the image is unusable
        return f"guest image missing ({exc}); run scripts/setup.sh"
    if runtime == "gvisor" and find_runsc() is None:
        return "gVisor runsc not installed; run scripts/setup.sh"
    return None


def start_server(tmp_path_factory: pytest.TempPathFactory, runtime: str) -> ServerProc:
    reason = skip_reason(runtime)
    if reason:
        pytest.skip(reason)
    if not image_is_current(load_settings(), "standard"):
        pytest.fail("the guest image is older than its recipe: run `mags image build`")
    base = tmp_path_factory.mktemp(f"e2e-{runtime}")
    extra = {"MAGS_POOL_SIZE": "1", "MAGS_SSH_PORT": "0", "MAGS_PROXY_PORT": str(free_port())}
    return ServerProc(base / "data", base / "home", free_port(), runtime, extra_env=extra).start()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    """A server on the namespaces runtime, for the whole module."""
    srv = start_server(tmp_path_factory, "namespaces")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def gvisor_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    """A server on the gVisor runtime, for the whole module."""
    srv = start_server(tmp_path_factory, "gvisor")
    yield srv
    srv.stop()
