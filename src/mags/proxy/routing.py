"""Host name → target: ``<label>.<served domain>[:port]`` to a job's sandbox and port.

Lookups hit the database (``core/urls.py``) at most once per label per ``ttl`` seconds:
the proxy routes every request, and a keep-alive connection may carry thousands per second.
A stale answer is harmless -- the agent is asked for the sandbox's real state (and address)
whenever a connection to it is opened -- and at most ``ttl`` old.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Protocol

from mags.core.urls import Miss, Target
from mags.proxy.pages import ProxyError, not_found

MAX_CACHED = 10_000


class RouteSource(Protocol):
    """Where routes come from (``UrlStore`` in production, a dict in tests)."""

    async def route(self, label: str) -> Target | Miss: ...


def _retrieve(fut: asyncio.Future[object]) -> None:
    if not fut.cancelled():
        fut.exception()  # a failed background refresh: the next request looks again


def host_label(host: bytes, domains: Sequence[str] | str) -> str | None:
    """The single label left of one of ``domains`` in a Host header value, or None if none.

    Labels are global: ``<label>.<any served domain>`` is the same app.  Pass the domains
    longest first when one is a suffix of another (``apps.example.com``, ``example.com``).
    """
    try:
        name = host.decode("ascii").strip().lower()
    except UnicodeDecodeError:
        return None
    if name.startswith("["):  # an IPv6 literal is never an app
        return None
    name = name.rsplit(":", 1)[0] if ":" in name else name
    name = name.rstrip(".")
    for domain in (domains,) if isinstance(domains, str) else domains:
        if len(name) <= len(domain) + 1 or not name.endswith(domain) or name[-len(domain) - 1] != ".":
            continue
        label = name[: -len(domain) - 1]
        return None if "." in label else label
    return None


def check_target(result: Target | Miss) -> Target:
    """The target if requests may go there, else the :class:`ProxyError` to answer with."""
    if isinstance(result, Miss):
        if result.reason == "port":
            raise not_found(f"This sandbox has no public URL for that port ({result.detail}). "
                            "Enable it with `mags url <name> <port>`.")  # fmt: skip
        if result.reason == "no-job":
            raise ProxyError(404, "no-sandbox", "No sandbox behind this alias",
                             f"The alias points at a workspace with no sandbox ({result.detail}).")  # fmt: skip
        raise not_found()
    # pending / starting: the connection waits for the sandbox (EdgeProxy.wait_started)
    if result.vm_status in ("running", "sleeping", "starting", "pending"):
        return result
    raise ProxyError(410, "stopped", "Sandbox stopped",
                     "The sandbox behind this URL has been stopped. Start it again to serve this URL.")  # fmt: skip


def still_starting(waited: float) -> ProxyError:
    """The 503 for a sandbox that did not start while a request waited for it."""
    detail = f"This sandbox has not started yet (waited {waited:g} s). Try again in a few seconds."
    return ProxyError(503, "starting", "Sandbox is starting", detail)


STARTING = ("pending", "starting")


class Router:
    """Cached route lookups by label.

    A fresh entry (younger than ``ttl``) is used as is.  An expired one is still used, for up
    to ``stale_for`` more seconds, while one background lookup refreshes it: requests never
    wait for the database on a hot name (the agent check at connect time guards against
    sandboxes that went away).
    """

    def __init__(self, source: RouteSource, ttl: float = 1.0, stale_for: float = 10.0) -> None:
        self.source = source
        self.ttl = ttl
        self.stale_for = stale_for
        self._cache: dict[str, tuple[float, Target | Miss]] = {}
        self._inflight: dict[str, asyncio.Future[Target | Miss]] = {}
        self._forgets = 0  # a lookup that started before a forget() must not fill the cache

    def cached(self, label: str) -> Target | Miss | None:
        """The cached answer for ``label`` if usable (no I/O; may start a background refresh)."""
        hit = self._cache.get(label)
        if hit is None:
            return None
        now = time.monotonic()
        if hit[0] > now:
            return hit[1]
        if now - hit[0] < self.stale_for:
            if label not in self._inflight:
                self._fetch(label).add_done_callback(_retrieve)
            return hit[1]
        return None

    async def resolve(self, label: str) -> Target | Miss:
        """Look ``label`` up (one database read for any number of concurrent callers)."""
        hit = self.cached(label)
        if hit is not None:
            return hit
        fut = self._inflight.get(label) or self._fetch(label)
        return await asyncio.shield(fut)

    def _fetch(self, label: str) -> asyncio.Future[Target | Miss]:
        fut: asyncio.Future[Target | Miss] = asyncio.ensure_future(self._lookup(label))
        self._inflight[label] = fut
        fut.add_done_callback(lambda f: self._inflight.get(label) is f and self._inflight.pop(label))
        return fut

    async def _lookup(self, label: str) -> Target | Miss:
        forgets = self._forgets
        result = await self.source.route(label)
        if forgets == self._forgets:
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()
            self._cache[label] = (time.monotonic() + self.ttl, result)
        return result

    def forget(self, label: str | None = None) -> None:
        """Drop one cached label (or all): the next request reads the database."""
        self._forgets += 1
        if label is None:
            self._inflight.clear()
            self._cache.clear()
        else:
            self._cache.pop(label, None)
            self._inflight.pop(label, None)
