"""Opening connections to a port inside a sandbox: ask its agent, wake it, connect, keep it awake.

* The sandbox's address comes from its agent (``get_sandbox``) for **every** upstream
  connection: network namespaces are pooled and reused at once (LIFO), so an address cached
  past a stop or a sleep could reach another tenant's sandbox.  One agent call per upstream
  connection is cheap because connections are reused for every request of a client connection.
* A sleeping sandbox is woken (``wake_sandbox``: restore, startup command) by the first
  request; concurrent requests share one wake; then the port is polled until it accepts, for
  at most ``proxy_wake_timeout_s``.
* Traffic counts as activity for the agent's idle timer: :meth:`Dialer.touch` calls
  ``wake_sandbox`` (a no-op but for the timestamp on a running sandbox) at most once per
  ``touch_interval`` per sandbox.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from mags.agent.models import AgentClient, SandboxInfo
from mags.core.urls import Target
from mags.errors import AgentError, MagsError
from mags.proxy.pages import ProxyError
from mags.scheduler.registry import AgentRegistry

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
RETRY_EVERY_S = 0.1


def _gone(target: Target) -> ProxyError:
    return ProxyError(410, "stopped", "Sandbox stopped",
                      "The sandbox behind this URL is no longer running. Start it again to serve this URL.")  # fmt: skip


def _unreachable(detail: str) -> ProxyError:
    return ProxyError(502, "sandbox-unreachable", "Sandbox unreachable", detail)


def not_listening(port: int, after_wake: bool) -> ProxyError:
    """The 502 for a sandbox whose app does not accept connections on ``port``."""
    hint = (
        f"The sandbox was woken, but nothing started listening on port {port} in time. "
        "Check its startup command (`mags set` / --startup-command)."
        if after_wake
        else f"Nothing is listening on port {port} in this sandbox (connection refused). "
        f"Start your app on 0.0.0.0:{port}, or wait a moment if it is still starting."
    )
    return ProxyError(502, "not-listening", "App not listening", hint)


class Dialer:
    """Connects the proxy to sandbox ports through the agents of ``registry``."""

    def __init__(self, registry: AgentRegistry, *, wake_timeout: float = 30.0, touch_interval: float = 30.0) -> None:
        self.registry = registry
        self.wake_timeout = wake_timeout
        self.touch_interval = touch_interval
        self._waking: dict[str, asyncio.Task[SandboxInfo]] = {}
        self._touched: dict[str, float] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def _agent(self, target: Target) -> AgentClient:
        agent = self.registry.get(target.agent_id)
        if agent is None or not target.vm_id:
            raise _unreachable("This sandbox's host is not reachable from this proxy.")
        return agent

    async def open(self, target: Target, factory: Callable[[], asyncio.Protocol]) -> tuple[Any, Any]:
        """``(transport, protocol)`` connected to ``target.port`` in the target's sandbox."""
        agent = self._agent(target)
        vm_id = str(target.vm_id)
        info = await self._call(agent.get_sandbox(vm_id), target)
        woke = False
        if info.state in ("sleeping", "starting"):
            info = await self.wake(agent, vm_id, target)
            woke = True
        if info.state != "running":
            raise _gone(target)
        if not info.ip:
            raise _unreachable("The sandbox has no network address.")
        self.touch(target)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.wake_timeout if woke else 0.0)
        while True:
            try:
                return await asyncio.wait_for(loop.create_connection(factory, info.ip, target.port), CONNECT_TIMEOUT_S)
            except ConnectionRefusedError:
                if loop.time() >= deadline:
                    raise not_listening(target.port, woke) from None
                await asyncio.sleep(RETRY_EVERY_S)
            except (OSError, TimeoutError) as exc:
                raise _unreachable(f"Cannot connect to port {target.port} of the sandbox ({exc}).") from exc

    async def _call(self, coro: Any, target: Target) -> SandboxInfo:
        try:
            return await coro
        except AgentError as exc:
            raise _unreachable(f"The sandbox's host did not answer ({exc}).") from exc
        except MagsError as exc:
            if exc.status_code in (404, 409, 410):
                raise _gone(target) from exc
            raise _unreachable(f"The sandbox's host refused: {exc}") from exc

    async def wake(self, agent: AgentClient, vm_id: str, target: Target) -> SandboxInfo:
        """Wake a sleeping sandbox (one wake for all concurrent callers), bounded in time."""
        task = self._waking.get(vm_id)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._call(agent.wake_sandbox(vm_id), target))
            self._waking[vm_id] = task
            task.add_done_callback(lambda t: self._woken(vm_id, t))
            self._touched[vm_id] = time.monotonic()  # a wake counts as activity
        try:
            return await asyncio.wait_for(asyncio.shield(task), self.wake_timeout)
        except TimeoutError:
            raise ProxyError(504, "wake-timeout", "Sandbox did not wake in time",
                             f"The sandbox did not wake within {self.wake_timeout:g} s. Try again.") from None  # fmt: skip

    def _woken(self, vm_id: str, task: asyncio.Task[SandboxInfo]) -> None:
        self._waking.pop(vm_id, None)
        if not task.cancelled():
            task.exception()  # retrieved here: the waiters (if any are left) got it already

    def touch(self, target: Target) -> None:
        """Count traffic as activity for the sandbox's idle timer (throttled; never blocks)."""
        vm_id = target.vm_id
        if vm_id is None:
            return
        now = time.monotonic()
        if now - self._touched.get(vm_id, -1e18) < self.touch_interval:
            return
        if len(self._touched) > 10_000:
            self._touched = {k: v for k, v in self._touched.items() if now - v < self.touch_interval}
        self._touched[vm_id] = now
        agent = self.registry.get(target.agent_id)
        if agent is None:
            return
        task = asyncio.get_running_loop().create_task(self._mark_active(agent, vm_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _mark_active(self, agent: AgentClient, vm_id: str) -> None:
        try:
            await agent.touch_sandbox(vm_id)
        except Exception as exc:  # noqa: BLE001 - activity marks are best effort
            log.debug("activity mark for %s failed: %s", vm_id, exc)

    async def close(self) -> None:
        for task in [*self._tasks, *self._waking.values()]:
            task.cancel()
        self._tasks.clear()
