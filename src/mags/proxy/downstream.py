"""The client side of a proxied connection: parse requests, route them, stream them upstream.

Per client connection there is at most one upstream connection, reused for every request
that goes to the same sandbox port (keep-alive both ways), and at most one request in flight
on it: requests a client pipelines wait in :attr:`ClientConnection.queue` until the previous
response has ended (see proxy/upstream.py for why).  Request heads are rebuilt with our
``X-Forwarded-*`` headers; bodies stream through as ``httptools`` hands them over (chunked
bodies re-chunked), never collected.  Memory per connection is bounded: the queue pauses
reading from the client past ``QUEUE_HIGH`` bytes, a full upstream send buffer pauses it too,
and a full client send buffer pauses reading from the upstream.

After a WebSocket (or any) upgrade is accepted with ``101`` both directions are a byte tunnel.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

import httptools

from mags.core.urls import Target
from mags.proxy.pages import ProxyError, render
from mags.proxy.request import Request, RequestParsing
from mags.proxy.routing import check_target
from mags.proxy.upstream import WRITE_HIGH_WATER, UpstreamConnection

if TYPE_CHECKING:
    from mags.proxy.server import EdgeProxy

log = logging.getLogger(__name__)

QUEUE_HIGH = 256 * 1024
TICK_S = 5.0
IDLE_TICKS = 15  # keep-alive connections idle for 75 s are closed
HEAD_TICKS = 6  # a request head must arrive within ~30 s (slowloris)
HEALTH = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n"


class ClientConnection(RequestParsing, asyncio.Protocol):
    """One client connection to the edge proxy."""

    PAUSE_QUEUE = 1
    PAUSE_UPSTREAM = 2

    def __init__(self, proxy: EdgeProxy) -> None:
        self.proxy = proxy
        self.router = proxy.router
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.peer = b""
        self.trusted = False
        self.queue: deque[Any] = deque()
        self.queued = 0
        self.upstream: UpstreamConnection | None = None
        self.inflight: Request | None = None
        self.connecting: asyncio.Task[None] | None = None
        self.write_paused = False
        self.closing = False
        self._paused = 0
        self._raw = False  # after an upgrade request: bytes pass through unparsed
        self._eof = False  # the client half-closed
        self._reads = 0
        self._seen_reads = 0
        self._idle_ticks = 0
        self._head_ticks = 0
        self._in_head = False
        self._timer: asyncio.TimerHandle | None = None
        self._forwarded = b""
        self._last_host: bytes | None = None
        self._last_label: str | None = None
        self._reset_head()

    # ------------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # (uvloop's are not asyncio.Transport)
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        peer = transport.get_extra_info("peername")
        host = peer[0] if isinstance(peer, tuple) else "127.0.0.1"
        self.peer = host.encode()
        self.trusted = self.proxy.is_trusted(host)
        self._forwarded = b"X-Forwarded-For: %s\r\nX-Forwarded-Proto: %s\r\nX-Forwarded-Host: " % (
            self.peer,
            self.proxy.scheme,
        )
        self.proxy.connections.add(self)
        self._timer = asyncio.get_running_loop().call_later(TICK_S, self._tick)

    def data_received(self, data: bytes) -> None:
        self._reads += 1
        if self.closing:
            return
        if self._raw:
            self.send(data)
            if self.upstream is not None:
                self.proxy.dialer.touch(self.upstream.target)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._raw = True
            rest = data[exc.args[0] :]
            if rest:
                self.send(rest)
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, ProxyError):
                self.fail(cause)
            elif cause is not None:
                log.error("proxy: request handling failed", exc_info=cause)
                self.fail(ProxyError(500, "proxy-error", "Proxy error", "The proxy failed on this request."))
            else:
                self.fail(ProxyError(400, "bad-request", "Bad request", f"The request is not valid HTTP/1.1 ({exc})."))

    def eof_received(self) -> bool:
        # half-closed client: finish what is in flight (the tunnel case forwards the EOF)
        if self._raw and self.upstream is not None and self.upstream.transport is not None:
            if self.upstream.transport.can_write_eof():
                self.upstream.transport.write_eof()
            return True
        self._eof = True  # no more requests: close once the ones in flight are answered
        return self.inflight is not None or self.connecting is not None or bool(self.queue)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.proxy.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
        if self.connecting is not None:
            self.connecting.cancel()
        if self.upstream is not None:
            self.upstream.close()
            self.upstream = None
        self.queue.clear()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.resume_reading()

    # ------------------------------------------------------------------ httptools callbacks
    def on_headers_complete(self) -> None:
        req = self._build_request()
        label = req.label
        # fast path: same sandbox port as the last request on this connection, route cached
        up = self.upstream
        if up is not None and req.error is None and not self.queue and self.inflight is None:
            res = self.router.cached(label)  # type: ignore[arg-type]
            if res.__class__ is Target and (res.vm_id, res.port) == up.key and res.vm_status == "running":  # type: ignore[union-attr]
                self._start(req, res)  # type: ignore[arg-type]
                return
        self.queue.append(req)
        self._advance()

    def on_body(self, body: bytes) -> None:
        if self._chunked:
            body = b"%x\r\n%b\r\n" % (len(body), body)
        self.send(body)

    def on_message_complete(self) -> None:
        if self._chunked:
            self.send(b"0\r\n\r\n")  # trailers, if any, are dropped

    # ------------------------------------------------------------------ request side
    def send(self, data: bytes) -> None:
        """Request bytes for the upstream: now if it is connected and nothing waits, else queued."""
        if self.closing:
            return
        if not self.queue and self.upstream is not None:
            self.upstream.write(data)
            return
        self.queue.append(data)
        self.queued += len(data)
        if self.queued > QUEUE_HIGH:
            self.pause(self.PAUSE_QUEUE)

    def _start(self, req: Request, target: Target) -> None:
        assert self.upstream is not None
        self.inflight = req
        self.upstream.send_request_head(req.head, req.is_head)
        self.proxy.dialer.touch(target)

    def _advance(self) -> None:
        """Move queued requests and body bytes upstream as far as the state allows."""
        queue = self.queue
        while queue and not self.closing:
            item = queue[0]
            if item.__class__ is Request:
                if self.inflight is not None or self.connecting is not None:
                    break
                if item.error is not None:
                    self.fail(item.error, item)
                    return
                cached = self.router.cached(item.label)
                if cached is None:
                    self._connect(item, None)
                    break
                try:
                    target = check_target(cached)
                except ProxyError as exc:
                    self.fail(exc, item)
                    return
                up = self.upstream
                if up is not None and up.key == (target.vm_id, target.port):
                    queue.popleft()
                    self._start(item, target)
                    continue
                self._connect(item, target)
                break
            if self.upstream is None and self.connecting is not None:
                break
            queue.popleft()
            self.queued -= len(item)
            if self.upstream is not None:
                self.upstream.write(item)
            # else: the rest of a body whose upstream closed after answering; nobody wants it
        if self._paused & self.PAUSE_QUEUE and self.queued <= QUEUE_HIGH // 2:
            self.resume(self.PAUSE_QUEUE)

    def _connect(self, req: Request, target: Target | None) -> None:
        self.connecting = asyncio.get_running_loop().create_task(self._open(req, target))

    async def _open(self, req: Request, target: Target | None) -> None:
        try:
            fresh = target is None
            if target is None:
                target = check_target(await self.router.resolve(req.label))  # type: ignore[arg-type]
            target = await self.proxy.wait_started(req.label, target)  # type: ignore[arg-type]
            up = self.upstream
            if up is None or up.key != (target.vm_id, target.port):
                up = await self._dial(req, target, fresh)
        except ProxyError as exc:
            self.connecting = None
            self.fail(exc, req)
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("proxy: connecting to %s failed", req.label)
            self.connecting = None
            self.fail(ProxyError(502, "proxy-error", "Proxy error", "The proxy could not reach the sandbox."), req)
            return
        self.connecting = None
        if self.closing:
            up.close()
            return
        self.upstream = up
        self.queue.popleft()  # req
        self._start(req, target)
        self._advance()

    async def _dial(self, req: Request, target: Target, fresh: bool) -> UpstreamConnection:
        if self.upstream is not None:  # another sandbox port than the last request's
            self.upstream.close()
            self.upstream = None
        try:
            return await self._open_upstream(target)
        except ProxyError as exc:
            if fresh or exc.status != 410:
                raise
        # the cached route may be stale (an alias's workspace moved to a new job): look again
        self.router.forget(req.label)
        return await self._open_upstream(check_target(await self.router.resolve(req.label)))  # type: ignore[arg-type]

    async def _open_upstream(self, target: Target) -> UpstreamConnection:
        _, up = await self.proxy.dialer.open(target, lambda: UpstreamConnection(self, target))
        return up  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ called by the upstream
    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def activity(self) -> None:
        if self.upstream is not None:
            self.proxy.dialer.touch(self.upstream.target)

    def response_done(self, up: UpstreamConnection, keep: bool) -> None:
        """The response to the in-flight request has ended (``keep``: the upstream stays open)."""
        if up is not self.upstream:
            return
        req, self.inflight = self.inflight, None
        if not keep:
            self.upstream = None
            up.close()
        if req is None or not keep or not req.keep_alive or self._raw or (self._eof and not self.queue):
            # the client was told (by the app's own headers) or asked that the connection ends
            self.close()
            return
        self._advance()

    def upgraded(self) -> None:
        self._raw = True
        self.inflight = None

    def upstream_lost(self, up: UpstreamConnection) -> None:
        if up is not self.upstream:
            return
        self.upstream = None
        if self.closing:
            return
        req = self.inflight
        if up.tunnel or up.in_response:
            # end of a tunnel, of a response delimited by closing, or a truncated one
            self.inflight = None
            self.close()
            return
        if req is None:
            self._advance()  # an idle keep-alive connection the app closed
            return
        self.inflight = None
        if up.served and req.retry_ok and not req.retried:
            # the app closed a reused connection as the request went out: send it again
            req.retried = True
            self.queue.appendleft(req)
            self._advance()
            return
        self.fail(ProxyError(502, "no-response", "No answer from the app",
                             "The app closed the connection without answering."), req)  # fmt: skip

    def upstream_broken(self, up: UpstreamConnection) -> None:
        up.abort()
        self.abort()

    # ------------------------------------------------------------------ flow control, ending
    def pause(self, reason: int) -> None:
        if not self._paused and self.transport is not None and not self.closing:
            self.transport.pause_reading()
        self._paused |= reason

    def resume(self, reason: int) -> None:
        if self._paused & reason:
            self._paused &= ~reason
            if not self._paused and self.transport is not None and not self.closing:
                self.transport.resume_reading()

    def fail(self, err: ProxyError, req: Request | None = None) -> None:
        """Answer with the proxy's own page, then close."""
        if self.closing or self.transport is None:
            return
        if err.status == 200:
            self.transport.write(HEALTH)
        else:
            self.transport.write(render(err, head_only=bool(req and req.is_head)))
        self.close()

    def close(self) -> None:
        """Close after what was written has been sent."""
        if self.closing:
            return
        self.closing = True
        self.queue.clear()
        if self.upstream is not None:
            self.upstream.close()
            self.upstream = None
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    def _tick(self) -> None:
        if self.closing:
            return
        progressed = self._reads != self._seen_reads
        self._seen_reads = self._reads
        if self._in_head:
            self._head_ticks += 1
            if self._head_ticks >= HEAD_TICKS:
                self.fail(ProxyError(408, "timeout", "Request timeout", "The request head took too long."))
                return
        idle = not self._raw and self.inflight is None and self.connecting is None and not self.queue
        self._idle_ticks = 0 if (progressed or not idle) else self._idle_ticks + 1
        if self._idle_ticks >= IDLE_TICKS:
            self.close()
            return
        self._timer = asyncio.get_running_loop().call_later(TICK_S, self._tick)
