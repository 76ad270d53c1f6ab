"""Fixtures of the security suite: a real ``mags server`` per runtime and two tenants.

Every test here attacks a real server the way a tenant (or a local user of the host) would,
and checks the *host* afterwards (file modes, inodes, free space, the server's memory, the
database's size) rather than trusting what the guest was told.  ``sec_server`` starts one
server per runtime for the whole module; a runtime that cannot run here is skipped with the
reason, never passed.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from mags import Mags
from mags.config import load_settings
from mags.runtime.gvisor import find_runsc
from mags.runtime.image import resolve_image
from tests.integration.server_fixture import ServerProc, free_port

RUNTIMES = ["namespaces", "gvisor"]


def runtime_skip_reason(runtime: str) -> str | None:
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


@dataclass
class Tenants:
    """A server and two unprivileged tenants on it (plus the admin)."""

    server: ServerProc
    alice_token: str
    bob_token: str

    def client(self, token: str) -> Mags:
        return Mags(api_token=token, api_url=self.server.url)


def start_server(tmp_path_factory: pytest.TempPathFactory, runtime: str, **env: str) -> ServerProc:
    reason = runtime_skip_reason(runtime)
    if reason:
        pytest.skip(reason)
    base = tmp_path_factory.mktemp(f"sec-{runtime}")
    extra = {"MAGS_POOL_SIZE": "1", "MAGS_SSH_PORT": "0", "MAGS_PROXY_PORT": str(free_port())}
    extra.update(env)
    return ServerProc(base / "data", base / "home", free_port(), runtime, extra_env=extra).start()


@pytest.fixture(scope="module", params=RUNTIMES)
def sec_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    """One real server per runtime, shared by a module's tests."""
    srv = start_server(tmp_path_factory, request.param)
    try:
        yield srv
    finally:
        srv.stop(signal.SIGTERM)


@pytest.fixture(scope="module")
def tenants(sec_server: ServerProc) -> Tenants:
    return Tenants(sec_server, sec_server.create_user_token("alice"), sec_server.create_user_token("bob"))


@pytest.fixture
def alice(tenants: Tenants) -> Iterator[Mags]:
    with tenants.client(tenants.alice_token) as m:
        yield m


@pytest.fixture
def bob(tenants: Tenants) -> Iterator[Mags]:
    with tenants.client(tenants.bob_token) as m:
        yield m
