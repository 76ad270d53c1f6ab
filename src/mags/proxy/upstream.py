"""The sandbox side of a proxied connection: forward response bytes as they come, find their ends.

Response bytes are written to the client unchanged, before parsing; ``httptools`` (llhttp,
in C) only tracks where each response ends, so that the client connection's next request can
go out on the same upstream connection, and notices ``101 Switching Protocols`` (from then on
both directions are a plain byte tunnel).  No per-header or per-body callback runs in Python.

llhttp cannot be told that a response answers a ``HEAD`` (it would wait for the body that
``Content-Length`` announces), so the response to a HEAD is delimited here: it ends with its
header block.  That is only possible because the proxy never pipelines requests upstream.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import httptools

from mags.core.urls import Target

if TYPE_CHECKING:
    from mags.proxy.downstream import ClientConnection

WRITE_HIGH_WATER = 256 * 1024
MAX_HEAD_BYTES = 64 * 1024


class UpstreamConnection(asyncio.Protocol):
    """One TCP connection to a sandbox port, serving one client connection."""

    def __init__(self, client: ClientConnection, target: Target) -> None:
        self.client = client
        self.target = target
        self.key = (target.vm_id, target.port)
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.head_request = False  # the in-flight request is a HEAD
        self.tunnel = False  # after 101: raw bytes both ways
        self.in_response = False  # bytes of the current response have arrived
        self.served = 0  # responses completed on this connection
        self._complete = False
        self._keep = True
        self._head_buf = b""
        self._closed = False

    # ------------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # (uvloop's are not asyncio.Transport)
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        if self.client.write_paused:
            transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        client = self.client
        client.write(data)  # forward first: parsing only decides what happens next
        if self.tunnel:
            client.activity()
            return
        self.in_response = True
        if self.head_request:
            self._head_response(data)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.tunnel = True
            client.upgraded()
            return
        except httptools.HttpParserError:
            client.upstream_broken(self)
            return
        if self._complete:
            self._response_done(self._keep)

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.client.upstream_lost(self)

    def pause_writing(self) -> None:
        self.client.pause(self.client.PAUSE_UPSTREAM)

    def resume_writing(self) -> None:
        self.client.resume(self.client.PAUSE_UPSTREAM)

    # ------------------------------------------------------------------ httptools callbacks
    def on_message_complete(self) -> None:
        code = self.parser.get_status_code()
        if code < 200 and code != 101:  # 100 Continue, 103 Early Hints: the real response follows
            return
        self._complete = True
        self._keep = self.parser.should_keep_alive()

    # ------------------------------------------------------------------ helpers
    def send_request_head(self, head: bytes, is_head: bool) -> None:
        """Write a request head; the response that follows answers it."""
        self.head_request = is_head
        assert self.transport is not None
        self.transport.write(head)

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def _response_done(self, keep: bool) -> None:
        self._complete = False
        self.in_response = False
        self.served += 1
        self.client.response_done(self, keep)

    def _head_response(self, data: bytes) -> None:
        buf = self._head_buf + data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD_BYTES:
                    self.client.upstream_broken(self)
                    return
                self._head_buf = buf
                return
            head, buf = buf[:end], buf[end + 4 :]
            first, _, rest = head.partition(b"\r\n")
            parts = first.split(b" ", 2)
            code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            if 100 <= code < 200 and code != 101:
                continue  # interim response; the final one follows
            self._head_buf = b""
            self.head_request = False
            headers = rest.lower()
            if first.startswith(b"HTTP/1.0"):
                keep = b"connection: keep-alive" in headers
            else:
                keep = b"connection: close" not in headers
            if code == 101:
                self.tunnel = True
                self.client.upgraded()
                return
            self._response_done(keep)
            return

    def close(self) -> None:
        if self.transport is not None and not self._closed:
            self._closed = True
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self._closed = True
            self.transport.abort()
