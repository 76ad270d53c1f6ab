"""The Host header decides which sandbox a request reaches: exactly one is accepted."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from proxy.harness import Harness, free_port, running_proxy, upstream_app


@pytest.fixture
async def h() -> Any:
    port = free_port()
    async with upstream_app(port), running_proxy() as harness:
        harness.add("app", "vm-1", port)
        harness.add("other", "vm-2", port)
        yield harness


async def send(h: Harness, head: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", h.port)
    writer.write(head)
    out = await asyncio.wait_for(reader.read(), 5)  # the proxy answers, then closes
    writer.close()
    return out


async def test_two_host_headers_are_refused(h: Harness) -> None:
    # RFC 9112 §3.2: a request with more than one Host header is answered 400; routing by
    # either one would let the app see a Host other than the one we routed by
    out = await send(h, b"GET /headers HTTP/1.1\r\nHost: app.localhost\r\nHost: other.localhost\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400"), out[:200]
    assert b"more than one Host header" in out
    assert h.routes.lookups == 0  # never routed


async def test_two_host_headers_with_different_case_are_refused(h: Harness) -> None:
    out = await send(h, b"GET / HTTP/1.1\r\nhost: app.localhost\r\nHOST: app.localhost\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400")


async def test_a_bad_second_request_on_a_keep_alive_connection_is_refused(h: Harness) -> None:
    ok = b"GET /headers HTTP/1.1\r\nHost: app.localhost\r\n\r\n"
    bad = b"GET /headers HTTP/1.1\r\nHost: app.localhost\r\nHost: other.localhost\r\n\r\n"
    out = await send(h, ok + bad)
    first, _, rest = out.partition(b"HTTP/1.1 400")
    assert first.startswith(b"HTTP/1.1 200") and b'"/headers"' in first
    assert rest, out[-300:]


async def test_one_host_header_still_works(h: Harness) -> None:
    out = await send(h, b"GET /headers HTTP/1.1\r\nHost: app.localhost\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200")
