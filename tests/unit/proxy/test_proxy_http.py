"""The edge proxy against a real HTTP/WebSocket app on loopback, with a fake agent and routes."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import websockets

from mags.core.urls import Miss
from proxy.harness import Harness, free_port, running_proxy, upstream_app


@pytest.fixture
async def up_port() -> Any:
    port = free_port()
    async with upstream_app(port):
        yield port


@pytest.fixture
async def h(up_port: int) -> Any:
    async with running_proxy() as harness:
        harness.add("app", "vm-1", up_port)
        yield harness


def client(h: Harness, label: str = "app") -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{h.port}", headers={"host": f"{label}.localhost:{h.port}"})


async def raw(h: Harness, data: bytes, *, until_close: bool = True, read: int = 65536) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", h.port)
    writer.write(data)
    out = await (reader.read() if until_close else reader.read(read))
    writer.close()
    return out


async def test_keep_alive_reuses_one_upstream_connection_and_sets_forwarded_headers(h: Harness) -> None:
    async with client(h) as c:
        seen = []
        for _ in range(5):
            r = await c.get("/headers", headers={"x-forwarded-for": "6.6.6.6", "x-forwarded-host": "evil"})
            assert r.status_code == 200
            seen.append(r.json())
    hdrs = seen[0]["headers"]
    assert hdrs["x-forwarded-for"] == "127.0.0.1"  # the client's own value is not trusted
    assert hdrs["x-forwarded-proto"] == "http"
    assert hdrs["x-forwarded-host"] == f"app.localhost:{h.port}"
    assert hdrs["host"] == f"app.localhost:{h.port}"
    assert h.routes.lookups == 1  # cached
    # one agent lookup for one upstream connection: the fake agent is asked only on connect
    assert h.agent.touches == ["vm-1"] and h.agent.wakes == []  # one activity mark, throttled; no wake


async def test_trusted_proxy_headers_are_kept_and_appended(up_port: int) -> None:
    async with running_proxy(proxy_trusted_proxies="127.0.0.0/8") as h:
        h.add("app", "vm-1", up_port)
        async with client(h) as c:
            r = await c.get("/headers", headers={"x-forwarded-for": "6.6.6.6", "x-forwarded-proto": "https"})
    hdrs = r.json()["headers"]
    assert hdrs["x-forwarded-for"] == "6.6.6.6, 127.0.0.1"
    assert hdrs["x-forwarded-proto"] == "https"


async def test_unknown_hosts_get_a_clear_404_and_health_answers(h: Harness) -> None:
    async with client(h, "nope") as c:
        r = await c.get("/")
        assert r.status_code == 404 and "No app here" in r.text
        assert r.headers["x-mags-error"] == "not-found"
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{h.port}") as c:
        r = await c.get("/")  # Host 127.0.0.1: not an app address
        assert r.status_code == 404 and "not an app address" in r.text
        assert (await c.get("/healthz")).text == "ok\n"


async def test_port_not_enabled_and_stopped(h: Harness) -> None:
    h.routes.table["p"] = Miss("port", "port 3000 of this sandbox has no public URL")
    h.add("gone", "vm-2", 1, vm_status="stopped")
    async with client(h, "p") as c:
        r = await c.get("/")
        assert r.status_code == 404 and "3000" in r.text
    async with client(h, "gone") as c:
        assert (await c.get("/")).status_code == 410


async def test_a_request_for_a_starting_sandbox_waits_for_it(up_port: int) -> None:
    async with running_proxy(start_wait_s=5) as h:
        h.add("soon", "vm-3", up_port, vm_status="pending")

        async def started() -> None:
            await asyncio.sleep(0.5)
            h.add("soon", "vm-3", up_port, vm_status="running")

        task = asyncio.create_task(started())
        async with client(h, "soon") as c:
            t = asyncio.get_running_loop().time()
            r = await c.get("/headers")
            assert r.status_code == 200, r.text
            assert 0.4 < asyncio.get_running_loop().time() - t < 4
            assert (await c.get("/headers")).status_code == 200  # the fresh route is used after
        await task


async def test_a_sandbox_that_never_starts_is_a_503_after_the_wait(up_port: int) -> None:
    async with running_proxy(start_wait_s=0.3) as h:
        h.add("soon", "vm-3", up_port, vm_status="starting")
        async with client(h, "soon") as c:
            r = await c.get("/")
        assert r.status_code == 503 and r.headers["retry-after"] and r.headers["x-mags-error"] == "starting"
        assert "waited 0.3 s" in r.text


async def test_every_served_domain_routes(up_port: int) -> None:
    async with running_proxy(apps_domains="apps.example.com,example.com,localhost") as h:
        h.add("app", "vm-1", up_port)
        for domain in ("apps.example.com", "example.com", "localhost"):
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{h.port}", headers={"host": f"app.{domain}:{h.port}"}
            ) as c:
                r = await c.get("/headers")
                assert r.status_code == 200 and r.json()["headers"]["host"] == f"app.{domain}:{h.port}"
        other = {"host": "app.other.org"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{h.port}", headers=other) as c:
            assert (await c.get("/")).status_code == 404


async def test_app_not_listening_is_a_502_that_says_so(h: Harness) -> None:
    h.add("idle", "vm-4", free_port())
    async with client(h, "idle") as c:
        r = await c.get("/")
    assert r.status_code == 502
    assert "not listening" in r.text.lower() or "nothing is listening" in r.text.lower()
    assert "connection refused" in r.text


async def test_streamed_bodies_both_ways(h: Harness) -> None:
    async with client(h) as c:
        r = await c.get("/stream", params={"n": 200, "size": 5000})
        assert r.status_code == 200 and len(r.content) == 1_000_000
        assert r.headers["transfer-encoding"] == "chunked"

        async def gen() -> Any:
            for i in range(50):
                yield bytes([65 + i % 26]) * 1000

        r = await c.post("/chunked-echo", content=gen())
        assert len(r.content) == 50_000 and r.content[:3] == b"AAA" and r.content[-3:] == b"XXX"
        r = await c.post("/upload", content=b"z" * 20_000_000)
        assert r.json() == {"received": 20_000_000}
        r = await c.head("/headers")  # a HEAD answer has a Content-Length but no body
        assert r.status_code == 200 and int(r.headers["content-length"]) > 0
        assert (await c.get("/headers")).json()["method"] == "GET"  # same connection still in sync


async def test_pipelined_requests_are_answered_in_order(h: Harness) -> None:
    host = f"app.localhost:{h.port}".encode()
    reqs = b"".join(b"GET /headers?%d HTTP/1.1\r\nHost: %s\r\n\r\n" % (i, host) for i in range(3))
    out = await raw(h, reqs + b"GET /x HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % host)
    assert out.count(b"HTTP/1.1 200 OK") == 4
    assert out.index(b'"/headers"') < out.index(b'"/x"')


async def test_expect_100_continue(h: Harness) -> None:
    host = f"app.localhost:{h.port}".encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", h.port)
    writer.write(b"POST /upload HTTP/1.1\r\nHost: %s\r\nContent-Length: 5\r\nExpect: 100-continue\r\n"
                 b"Connection: close\r\n\r\n" % host)
    first = await reader.readuntil(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 100")
    writer.write(b"hello")
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b'{"received": 5}' in await reader.read()  # chunked, then the connection closes
    writer.close()


async def test_websocket_echo_both_ways(h: Harness) -> None:
    uri = f"ws://app.localhost:{h.port}/ws"
    async with websockets.connect(uri, host="127.0.0.1", port=h.port) as ws:
        await ws.send("hi")
        assert await ws.recv() == "echo:hi"
        await ws.send(b"\x00" * 100_000)
        assert await ws.recv() == b"\x00" * 100_000


async def test_sleeping_sandbox_is_woken_once_by_concurrent_requests() -> None:
    port = free_port()
    async with running_proxy() as h:
        h.add("sleepy", "vm-5", port, state="sleeping", vm_status="sleeping")
        apps: list[Any] = []

        async def on_wake(vm_id: str) -> None:
            async def later() -> Any:  # the app comes up a moment after the sandbox
                await asyncio.sleep(0.3)
                cm = upstream_app(port)
                await cm.__aenter__()
                return cm

            apps.append(asyncio.get_running_loop().create_task(later()))

        h.agent.on_wake = on_wake
        h.agent.wake_delay = 0.2
        async with client(h, "sleepy") as c:
            rs = await asyncio.gather(*(c.get("/headers") for _ in range(4)))
        assert [r.status_code for r in rs] == [200] * 4
        assert h.agent.wakes.count("vm-5") == 1
        for task in apps:
            await (await task).__aexit__(None, None, None)


async def test_woken_sandbox_whose_app_never_listens_gives_502_after_the_timeout() -> None:
    async with running_proxy(proxy_wake_timeout_s=0.5) as h:
        h.add("dead", "vm-6", free_port(), state="sleeping", vm_status="sleeping")
        async with client(h, "dead") as c:
            r = await c.get("/")
        assert r.status_code == 502 and "woken" in r.text


async def test_stale_route_is_looked_up_again(up_port: int) -> None:
    async with running_proxy() as h:
        h.add("alias", "vm-old", up_port)
        async with client(h, "alias") as c:
            assert (await c.get("/headers")).status_code == 200
        # the workspace moved to a new job; the old sandbox is gone, the cache still says vm-old
        del h.agent.states["vm-old"]
        h.add("alias", "vm-new", up_port)
        h.routes.table["alias"] = h.routes.table["alias"]
        async with client(h, "alias") as c:
            assert (await c.get("/headers")).status_code == 200


async def test_bad_requests_are_refused(h: Harness) -> None:
    assert (await raw(h, b"GARBAGE\r\n\r\n")).startswith(b"HTTP/1.1 400")
    assert (await raw(h, b"GET / HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 400")  # no Host
    big = b"GET / HTTP/1.1\r\nHost: app.localhost\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n"
    assert (await raw(h, big)).startswith(b"HTTP/1.1 431")
