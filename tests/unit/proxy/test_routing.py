"""Host names to labels, and the route cache (fresh, stale-while-refreshing, forgotten)."""

from __future__ import annotations

import asyncio

import pytest

from mags.core.urls import Miss, Target
from mags.proxy.pages import ProxyError
from mags.proxy.routing import Router, check_target, host_label


@pytest.mark.parametrize(
    ("host", "label"),
    [
        (b"abc.localhost", "abc"),
        (b"ABC.LocalHost:8091", "abc"),
        (b"abc.localhost.", "abc"),
        (b"abc-8080.localhost:1", "abc-8080"),
        (b"localhost", None),
        (b".localhost", None),
        (b"a.b.localhost", None),
        (b"abclocalhost", None),
        (b"abc.example.com", None),
        (b"[::1]:8091", None),
        (b"\xff.localhost", None),
    ],
)
def test_host_label(host: bytes, label: str | None) -> None:
    assert host_label(host, "localhost") == label


@pytest.mark.parametrize(
    ("host", "label"),
    [
        (b"abc.apps.example.com", "abc"),
        (b"abc.example.com:443", "abc"),
        (b"ABC.localhost", "abc"),
        (b"abc.apps.magpiecloud.com", None),  # not served here
        (b"x.y.example.com", None),
    ],
)
def test_host_label_with_several_served_domains(host: bytes, label: str | None) -> None:
    # longest first, as EdgeProxy orders them: apps.example.com is not "<label>.example.com"
    assert host_label(host, ["apps.example.com", "example.com", "localhost"]) == label


def test_check_target() -> None:
    t = Target("j", 1, "vm-1", "a", "running", 8080)
    assert check_target(t) is t
    for status in ("pending", "starting", "sleeping"):  # pending/starting: the request waits for it
        t = Target("j", 1, "vm-1", "a", status, 8080)
        assert check_target(t) is t
    for status, code in (("stopped", 410), ("stopping", 410)):
        with pytest.raises(ProxyError) as err:
            check_target(Target("j", 1, "vm-1", "a", status, 8080))
        assert err.value.status == code
    with pytest.raises(ProxyError) as err:
        check_target(Miss("unknown"))
    assert err.value.status == 404


class Source:
    def __init__(self) -> None:
        self.value: Target | Miss = Miss("unknown")
        self.calls = 0
        self.gate: asyncio.Event | None = None

    async def route(self, label: str) -> Target | Miss:
        self.calls += 1
        value = self.value
        if self.gate is not None:
            await self.gate.wait()
        return value


async def test_router_caches_refreshes_stale_entries_in_the_background_and_forgets() -> None:
    src = Source()
    router = Router(src, ttl=0.05, stale_for=10)
    assert router.cached("x") is None
    results = await asyncio.gather(*(router.resolve("x") for _ in range(5)))
    assert results == [Miss("unknown")] * 5 and src.calls == 1  # one lookup for concurrent callers
    assert router.cached("x") == Miss("unknown")
    await asyncio.sleep(0.06)
    target = Target("j", 1, "vm-1", "a", "running", 8080)
    src.value = target
    assert router.cached("x") == Miss("unknown")  # stale but usable; a refresh started
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert router.cached("x") == target and src.calls == 2
    # a lookup that started before forget() must not put its (old) answer back
    await asyncio.sleep(0.06)
    src.gate = asyncio.Event()
    router.cached("x")  # starts a refresh that reads `target`
    await asyncio.sleep(0)
    src.value = Miss("port")
    router.forget("x")
    src.gate.set()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert router.cached("x") is None
    assert await router.resolve("x") == Miss("port")
