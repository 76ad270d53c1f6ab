"""Request heads: parse them (``httptools`` callbacks) and rebuild them for the upstream.

:class:`RequestParsing` is mixed into the client connection: it collects one request head,
keeps the client's ``X-Forwarded-*`` values only from trusted peers (a load balancer), and
builds the head the sandbox sees with our ``X-Forwarded-For/-Proto/-Host``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mags.proxy.pages import ProxyError, not_found
from mags.proxy.routing import host_label

if TYPE_CHECKING:
    from mags.proxy.server import EdgeProxy

MAX_HEAD_BYTES = 64 * 1024
_VERSIONS = {"1.1": b"1.1", "1.0": b"1.0"}
_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS"})
_DROP = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded", b"x-real-ip"})


class Request:
    """A parsed request head waiting for, or on, an upstream connection."""

    __slots__ = ("error", "head", "is_head", "keep_alive", "label", "retried", "retry_ok")

    def __init__(self, label: str | None, head: bytes, is_head: bool, keep_alive: bool, retry_ok: bool) -> None:
        self.label = label
        self.head = head
        self.is_head = is_head
        self.keep_alive = keep_alive
        self.retry_ok = retry_ok  # no body: may be re-sent if a reused connection was closed under it
        self.error: ProxyError | None = None
        self.retried = False


class RequestParsing:
    """httptools request callbacks and head building (mixed into ``ClientConnection``)."""

    proxy: EdgeProxy
    parser: Any
    peer: bytes
    trusted: bool
    _forwarded: bytes
    _last_host: bytes | None
    _last_label: str | None
    _in_head: bool
    _head_ticks: int

    def _reset_head(self) -> None:
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._host: bytes | None = None
        self._hosts = 0
        self._fwd: dict[bytes, bytes] | None = None
        self._hbytes = 0
        self._chunked = False
        self._has_body = False

    def on_message_begin(self) -> None:
        self._reset_head()
        self._in_head = True
        self._head_ticks = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._hbytes += len(url)
        if self._hbytes > MAX_HEAD_BYTES:
            raise ProxyError(414, "uri-too-long", "URL too long", "The request URL is longer than 64 KiB.")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._hbytes += len(name) + len(value) + 4
        if self._hbytes > MAX_HEAD_BYTES:
            raise ProxyError(431, "headers-too-large", "Headers too large", "The request headers exceed 64 KiB.")
        low = name.lower()
        if low == b"host":
            self._host = value
            self._hosts += 1
        elif low == b"transfer-encoding":
            self._chunked = b"chunked" in value.lower()
            self._has_body = True
        elif low == b"content-length":
            self._has_body = value.strip() not in (b"0", b"")
        elif low in _DROP:
            if not self.trusted:
                return  # only our own values: a client must not pick the address an app sees
            fwd = self._fwd = self._fwd or {}
            if low == b"x-forwarded-for" and low in fwd:
                fwd[low] += b", " + value
            else:
                fwd[low] = value
            if low in (b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"):
                return  # re-added below
        self._headers.append((name, value))

    def _build_request(self) -> Request:
        """The request whose head just ended, rebuilt for the upstream (with ``error`` if refused)."""
        self._in_head = False
        p = self.parser
        method = p.get_method()
        host = self._host
        parts = [method, b" ", self._url, b" HTTP/", _VERSIONS.get(p.get_http_version()) or b"1.1", b"\r\n"]
        for name, value in self._headers:
            parts += (name, b": ", value, b"\r\n")
        fwd = self._fwd
        if fwd is None:  # the usual case: only our own X-Forwarded-* values
            parts += (self._forwarded, host or b"", b"\r\n\r\n")
        else:
            xff = fwd[b"x-forwarded-for"] + b", " + self.peer if b"x-forwarded-for" in fwd else self.peer
            parts += (b"X-Forwarded-For: ", xff, b"\r\nX-Forwarded-Proto: ")
            parts += (fwd.get(b"x-forwarded-proto") or self.proxy.scheme, b"\r\nX-Forwarded-Host: ")
            parts += (fwd.get(b"x-forwarded-host") or host or b"", b"\r\n\r\n")
        if host is None:
            label = None
        elif host == self._last_host:  # a keep-alive connection asks for the same host again
            label = self._last_label
        else:
            label = host_label(host, self.proxy.domains)
            self._last_host, self._last_label = host, label
        retry_ok = not self._has_body and method in _IDEMPOTENT
        req = Request(label, b"".join(parts), method == b"HEAD", p.should_keep_alive(), retry_ok)
        if host is None:
            req.error = ProxyError(400, "no-host", "Bad request", "The request has no Host header.")
        elif self._hosts > 1:
            # RFC 9112 §3.2: we would route by one Host and the app might read the other
            message = "The request has more than one Host header."
            req.error = ProxyError(400, "many-hosts", "Bad request", message)
        elif method == b"CONNECT":
            req.error = ProxyError(405, "connect", "Method not allowed", "This is not a forward proxy.")
        elif label is None:
            if self._url == b"/healthz":
                req.error = ProxyError(200, "health", "", "")
            else:
                req.error = not_found(f"{host.decode('latin-1')} is not an app address of this server.")
        return req
