"""``EdgeProxy``: the listening socket, its collaborators, and the two ways to run it.

* Embedded (``mags server``): :func:`start_edge_proxy` in the server's event loop, sharing its
  database handle and agent registry.
* Separate process (production, same code): ``python -m mags.proxy`` (:func:`serve_proxy`)
  with its own database connection and agent clients built from the ``agents`` table.
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
import ssl
from collections.abc import Callable
from typing import Any

from mags.config import Settings
from mags.core.db import Database
from mags.core.ids import Clock
from mags.core.urls import UrlStore
from mags.errors import ConfigError
from mags.proxy.dialer import Dialer
from mags.proxy.downstream import ClientConnection
from mags.proxy.routing import Router, RouteSource
from mags.scheduler.registry import AgentRegistry

log = logging.getLogger(__name__)

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(spec: str) -> list[IpNetwork]:
    """``"10.0.0.0/8, 127.0.0.1"`` → networks (ConfigError on a bad entry)."""
    nets: list[IpNetwork] = []
    for part in spec.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            nets.append(ipaddress.ip_network(part, strict=False))
        except ValueError as exc:
            raise ConfigError(f"bad proxy_trusted_proxies entry {part!r}: {exc}") from exc
    return nets


def tls_context(cert: str, key: str | None) -> ssl.SSLContext:
    """A server-side TLS context for ``cert`` (PEM chain) and ``key``, HTTP/1.1 only (ALPN)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the proxy's TLS certificate {cert} / key {key}: {exc}") from exc
    ctx.set_alpn_protocols(["http/1.1"])  # we speak HTTP/1.1 only; keeps h2 clients from trying
    return ctx


class EdgeProxy:
    """Routes ``<label>.<apps_domain>`` requests to sandbox ports."""

    def __init__(
        self,
        settings: Settings,
        routes: RouteSource,
        registry: AgentRegistry,
        *,
        route_ttl: float = 1.0,
    ) -> None:
        self.settings = settings
        self.domain = settings.apps_domain
        self.router = Router(routes, ttl=route_ttl)
        touch = max(1.0, min(30.0, settings.idle_timeout_s / 4))
        self.dialer = Dialer(registry, wake_timeout=settings.proxy_wake_timeout_s, touch_interval=touch)
        self.scheme = b"https" if settings.proxy_tls else b"http"
        self._trusted = parse_networks(settings.proxy_trusted_proxies)
        self._trust_cache: dict[str, bool] = {}
        self.connections: set[ClientConnection] = set()
        self._server: asyncio.Server | None = None

    def routes_changed(self, labels: list[str]) -> None:
        """Forget cached routes of ``labels`` (URLs enabled, aliases changed)."""
        for label in labels:
            self.router.forget(label)

    def is_trusted(self, host: str) -> bool:
        """Whether a peer's own X-Forwarded-* headers are kept (a load balancer in front of us)."""
        if not self._trusted:
            return False
        hit = self._trust_cache.get(host)
        if hit is None:
            try:
                addr = ipaddress.ip_address(host)
                hit = any(addr in net for net in self._trusted)
            except ValueError:
                hit = False
            if len(self._trust_cache) > 4096:
                self._trust_cache.clear()
            self._trust_cache[host] = hit
        return hit

    async def start(self, host: str | None = None, port: int | None = None) -> None:
        """Listen (defaults: ``proxy_listen_host``, ``proxy_port``; port 0 picks a free one)."""
        s = self.settings
        ctx = tls_context(str(s.proxy_tls_cert), str(s.proxy_tls_key) if s.proxy_tls_key else None) if s.proxy_tls else None
        factory: Callable[[], ClientConnection] = lambda: ClientConnection(self)
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                factory,
                host or s.proxy_listen_host,
                s.proxy_port if port is None else port,
                ssl=ctx,
                backlog=1024,
                reuse_address=True,
            )
        except OSError as exc:
            raise ConfigError(f"edge proxy cannot listen on {host or s.proxy_listen_host}:{s.proxy_port}: {exc}") from exc

    @property
    def port(self) -> int:
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.abort()
        await self.dialer.close()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None


def freeze_startup_heap() -> None:
    """Exempt everything allocated so far from the cyclic GC (``gc.freeze``).

    Measured in ``mags server`` under proxy load: a full (generation 2) collection walks the
    whole startup heap (FastAPI, SQLAlchemy, pydantic models...) and stalled the event loop
    for ~110 ms, which every request in flight then waited for.  Frozen objects are the
    long-lived ones anyway; later collections only walk what was allocated since.
    """
    gc.collect()
    gc.freeze()


async def start_embedded_proxy(
    settings: Settings, db: Database, registry: AgentRegistry, app: Any = None
) -> EdgeProxy | None:
    """The proxy inside ``mags server``, listening; None when ``proxy_enabled`` is off.

    With the API ``app`` (where ``install_urls`` left its ``UrlStore``), URLs enabled and
    aliases changed through the API take effect at once instead of after the route cache's TTL.
    """
    if not settings.proxy_enabled:
        return None
    store = getattr(getattr(app, "state", None), "url_store", None) or UrlStore(db, Clock())
    proxy = EdgeProxy(settings, store, registry)
    store.listeners.append(proxy.routes_changed)
    try:
        await proxy.start()
    except ConfigError as exc:
        # like the SSH gateway: the API and sandboxes still work; URLs are issued, not served
        log.error("%s; running without public URLs", exc)
        print(f"warning: {exc}; running without the edge proxy", flush=True)
        return None
    if settings.proxy_port == 0:
        settings.proxy_port = proxy.port  # the URLs we hand out name the port we got
    freeze_startup_heap()
    print(f"public URLs on {settings.app_url('*')} (edge proxy on port {proxy.port})", flush=True)
    return proxy
