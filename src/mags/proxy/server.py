"""``EdgeProxy``: the listening socket, its collaborators, and the two ways to run it.

* Embedded (``mags server``): :func:`start_edge_proxy` in the server's event loop, sharing its
  database handle and agent registry.
* Separate process (production, same code): ``python -m mags.proxy`` (:func:`serve_proxy`)
  with its own database connection and agent clients built from the ``agents`` table.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import socket
import ssl
import sys
from collections.abc import Callable
from typing import Any

from mags.config import Settings
from mags.core.db import Database
from mags.core.ids import Clock
from mags.core.urls import Target, UrlStore
from mags.errors import ConfigError
from mags.proxy.dialer import Dialer
from mags.proxy.downstream import ClientConnection
from mags.proxy.routing import STARTING, Router, RouteSource, check_target, still_starting
from mags.scheduler.registry import AgentRegistry

log = logging.getLogger(__name__)

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# a request for a sandbox that is still being created re-reads its route this often (this
# process has no notifier: the control plane that launches the sandbox may be elsewhere)
START_POLL_S = 0.2


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


def server_tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The proxy's TLS context when ``proxy_tls_cert`` is set (ConfigError if it cannot load)."""
    if not settings.proxy_tls:
        return None
    key = str(settings.proxy_tls_key) if settings.proxy_tls_key else None
    return tls_context(str(settings.proxy_tls_cert), key)


class EdgeProxy:
    """Routes ``<label>.<served domain>`` requests to sandbox ports."""

    def __init__(
        self,
        settings: Settings,
        routes: RouteSource,
        registry: AgentRegistry,
        *,
        route_ttl: float = 1.0,
    ) -> None:
        self.settings = settings
        # longest first: with apps.example.com and example.com both served, x.apps.example.com is "x"
        self.domains = sorted(settings.served_apps_domains, key=len, reverse=True)
        self.router = Router(routes, ttl=route_ttl)
        self.start_wait = settings.start_wait_s
        touch = max(1.0, min(30.0, settings.idle_timeout_s / 4))
        self.dialer = Dialer(registry, wake_timeout=settings.proxy_wake_timeout_s, touch_interval=touch)
        self.scheme = b"https" if settings.proxy_tls else b"http"
        self._trusted = parse_networks(settings.proxy_trusted_proxies)
        self._trust_cache: dict[str, bool] = {}
        self.connections: set[ClientConnection] = set()
        self._servers: list[asyncio.Server] = []

    def routes_changed(self, labels: list[str]) -> None:
        """Forget cached routes of ``labels`` (URLs enabled, aliases changed)."""
        for label in labels:
            self.router.forget(label)

    async def wait_started(self, label: str, target: Target) -> Target:
        """``target`` once its sandbox is created (bounded by ``start_wait_s``; then 503).

        ``run -p`` then at once a request to its URL is what scripts do: they should get the
        app, not an error page, as soon as the sandbox runs.
        """
        if target.vm_status not in STARTING:
            return target
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_wait
        while loop.time() < deadline:
            await asyncio.sleep(min(START_POLL_S, max(0.0, deadline - loop.time())))
            target = check_target(await self.router.source.route(label))
            if target.vm_status not in STARTING:
                self.router.forget(label)  # the cached route still says it is starting
                return target
        raise still_starting(self.start_wait)

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

    async def start(
        self, host: str | None = None, port: int | None = None, *, socks: list[socket.socket] | None = None
    ) -> None:
        """Listen (defaults: ``proxy_listen_host``, ``proxy_port``; port 0 picks a free one), or
        accept on ``socks``, listening sockets bound elsewhere (the parent of a child proxy)."""
        s = self.settings
        ctx = server_tls_context(s)
        factory: Callable[[], ClientConnection] = lambda: ClientConnection(self)
        loop = asyncio.get_running_loop()
        if socks is not None:
            for sock in socks:
                self._servers.append(await loop.create_server(factory, sock=sock, ssl=ctx, backlog=1024))
            return
        try:
            server = await loop.create_server(
                factory,
                host or s.proxy_listen_host,
                s.proxy_port if port is None else port,
                ssl=ctx,
                backlog=1024,
                reuse_address=True,
            )
        except OSError as exc:
            raise ConfigError(f"edge proxy cannot listen on {host or s.proxy_listen_host}:{s.proxy_port}: {exc}") from exc
        self._servers.append(server)

    @property
    def port(self) -> int:
        assert self._servers and self._servers[0].sockets
        return int(self._servers[0].sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        for conn in list(self.connections):
            conn.abort()
        await self.dialer.close()
        for server in servers:
            await server.wait_closed()


def freeze_startup_heap() -> None:
    """Exempt everything allocated so far from the cyclic GC (``gc.freeze``).

    Measured in ``mags server`` under proxy load: a full (generation 2) collection walks the
    whole startup heap (FastAPI, SQLAlchemy, pydantic models...) and stalled the event loop
    for ~110 ms, which every request in flight then waited for.  Frozen objects are the
    long-lived ones anyway; later collections only walk what was allocated since.
    """
    gc.collect()
    gc.freeze()


async def listen_sockets(settings: Settings) -> list[socket.socket]:
    """The proxy's listening sockets (``proxy_listen_host``:``proxy_port``), bound by asyncio as
    ``EdgeProxy.start`` would (every address of the host), for a child process to accept on."""
    host, port = settings.proxy_listen_host, settings.proxy_port
    loop = asyncio.get_running_loop()
    try:
        bound = await loop.create_server(asyncio.Protocol, host, port, reuse_address=True, start_serving=False)
        socks = [ts.dup() for ts in bound.sockets]
        bound.close()
        for sock in socks:
            sock.listen(1024)
    except OSError as exc:
        raise ConfigError(f"edge proxy cannot listen on {host}:{port}: {exc}") from exc
    return socks


class ProxyProcess:
    """The edge proxy of ``mags server`` as a supervised child process (uvloop, own GIL).

    The server binds the listening socket (so a busy port or a bad certificate is reported as
    before, and ``proxy_port = 0`` resolves here) and passes it to ``python -m mags.proxy
    --child``, with the settings as the first line of the child's stdin.  Later lines are route
    labels to forget (URLs enabled, aliases changed through this server's API), so the child
    sees them at once, like the in-process proxy did.  The child stops at EOF on its stdin:
    when the server stops, or dies.  The server keeps its copy of the socket, so a child that
    crashed is restarted (after ``RESTART_DELAY_S``) with connections waiting in the backlog.
    """

    RESTART_DELAY_S = 1.0

    def __init__(self, settings: Settings, socks: list[socket.socket]) -> None:
        self.settings = settings
        self.socks = socks
        self.fds = [sock.fileno() for sock in socks]
        self.proc: asyncio.subprocess.Process | None = None
        self._closing = False
        self._supervisor: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        return int(self.socks[0].getsockname()[1])

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    async def start(self) -> None:
        await self._spawn()
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise(), name="mags-edge-proxy")

    async def _spawn(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mags.proxy", "--child", "--fds", ",".join(map(str, self.fds)),
            stdin=asyncio.subprocess.PIPE,
            pass_fds=self.fds,
            start_new_session=True,  # a terminal's Ctrl-C goes to the server, which stops us
        )  # fmt: skip
        assert self.proc.stdin is not None
        self.proc.stdin.write(self.settings.model_dump_json().encode() + b"\n")

    async def _supervise(self) -> None:
        while True:
            proc = self.proc
            assert proc is not None
            code = await proc.wait()
            if self._closing:
                return
            if code == 2:  # a configuration error; restarting will not help
                log.error("edge proxy process exited with a configuration error; running without public URLs")
                return
            log.error("edge proxy process exited (code %s); restarting it", code)
            await asyncio.sleep(self.RESTART_DELAY_S)
            if self._closing:
                return
            try:
                await self._spawn()
            except OSError as exc:
                log.error("cannot restart the edge proxy process: %s", exc)
                return

    def routes_changed(self, labels: list[str]) -> None:
        """Tell the child to forget cached routes of ``labels`` (one per line)."""
        proc = self.proc
        if proc is None or proc.stdin is None or proc.returncode is not None or not labels:
            return
        with contextlib.suppress(Exception):  # a child being restarted re-reads the database
            proc.stdin.write("".join(f"{label}\n" for label in labels).encode())

    async def close(self) -> None:
        """Stop the child (EOF on its stdin, then SIGTERM, then SIGKILL) and close the socket."""
        self._closing = True
        proc = self.proc
        if proc is not None and proc.returncode is None:
            assert proc.stdin is not None
            with contextlib.suppress(Exception):
                proc.stdin.close()
            for stop in (None, proc.terminate, proc.kill):
                if stop is not None:
                    with contextlib.suppress(ProcessLookupError):
                        stop()
                try:
                    await asyncio.wait_for(proc.wait(), 5.0)
                    break
                except TimeoutError:
                    continue
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(BaseException):
                await self._supervisor
        for sock in self.socks:
            sock.close()


async def start_embedded_proxy(
    settings: Settings, db: Database, registry: AgentRegistry, app: Any = None, *, in_process: bool = False
) -> EdgeProxy | ProxyProcess | None:
    """The proxy of ``mags server``, listening; None when ``proxy_enabled`` is off.

    By default a child process (:class:`ProxyProcess`); ``in_process`` runs it in this event
    loop instead, sharing ``db`` and ``registry``.  With the API ``app`` (where ``install_urls``
    left its ``UrlStore``), URLs enabled and aliases changed through the API take effect at once
    instead of after the route cache's TTL.
    """
    if not settings.proxy_enabled:
        return None
    store = getattr(getattr(app, "state", None), "url_store", None) or UrlStore(db, Clock())
    proxy: EdgeProxy | ProxyProcess
    try:
        if in_process:
            proxy = EdgeProxy(settings, store, registry)
            await proxy.start()
        else:
            server_tls_context(settings)  # a bad certificate is reported here, not by a crashing child
            proxy = ProxyProcess(settings, await listen_sockets(settings))
            if settings.proxy_port == 0:
                settings.proxy_port = proxy.port  # the URLs we hand out name the port we got
            await proxy.start()
    except ConfigError as exc:
        # like the SSH gateway: the API and sandboxes still work; URLs are issued, not served
        log.error("%s; running without public URLs", exc)
        print(f"warning: {exc}; running without the edge proxy", flush=True)
        return None
    store.listeners.append(proxy.routes_changed)
    if settings.proxy_port == 0:
        settings.proxy_port = proxy.port  # the URLs we hand out name the port we got
    freeze_startup_heap()  # also keeps full collections of the server's startup heap off its loop
    print(f"public URLs on {settings.app_url('*')} (edge proxy on port {proxy.port})", flush=True)
    return proxy
