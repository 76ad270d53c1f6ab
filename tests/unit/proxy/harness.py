"""A proxy on loopback with a fake agent and route table, and a real upstream app (uvicorn)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from mags.agent.models import SandboxInfo
from mags.config import Settings
from mags.core.urls import Miss, Target
from mags.errors import MagsError
from mags.proxy.server import EdgeProxy
from mags.scheduler.registry import AgentRegistry


def free_port() -> int:
    """A free port below the ephemeral range.

    The proxy retries connecting to a port nothing listens on yet; with an ephemeral port the
    kernel may pick that very port as the source and connect the socket to itself.
    """
    while True:
        port = random.randint(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


class Routes:
    """label -> Target | Miss, counting lookups."""

    def __init__(self) -> None:
        self.table: dict[str, Target | Miss] = {}
        self.lookups = 0

    async def route(self, label: str) -> Target | Miss:
        self.lookups += 1
        return self.table.get(label, Miss("unknown"))


@dataclass
class FakeAgent:
    """get_sandbox / wake_sandbox over a dict of states; every sandbox is at 127.0.0.1."""

    agent_id: str = "agent-1"
    states: dict[str, str] = field(default_factory=dict)
    wakes: list[str] = field(default_factory=list)
    wake_delay: float = 0.0
    on_wake: Any = None  # async callable(vm_id) run during a wake (start the app)
    touches: list[str] = field(default_factory=list)  # activity marks

    def info(self, vm_id: str) -> SandboxInfo:
        return SandboxInfo(sandbox_id=vm_id, job_id="j-" + vm_id, state=self.states[vm_id],  # type: ignore[arg-type]
                           ip="127.0.0.1", runtime="fake", created_at=0.0)

    async def get_sandbox(self, vm_id: str) -> SandboxInfo:
        if vm_id not in self.states:
            raise MagsError(f"no sandbox {vm_id}", status_code=404)
        return self.info(vm_id)

    async def wake_sandbox(self, vm_id: str) -> SandboxInfo:
        self.wakes.append(vm_id)
        if self.states.get(vm_id) == "sleeping":
            await asyncio.sleep(self.wake_delay)
            if self.on_wake is not None:
                await self.on_wake(vm_id)
            self.states[vm_id] = "running"
        return await self.get_sandbox(vm_id)

    async def touch_sandbox(self, vm_id: str) -> None:
        self.touches.append(vm_id)

    async def close(self) -> None:
        pass


# ---------------------------------------------------------------------------- upstream app
async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Test app: /headers, /stream?n=&size=, /upload (counts), /slow, /ws (echo), /chunked-echo."""
    if scope["type"] == "lifespan":
        return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            msg = await receive()
            if msg["type"] == "websocket.disconnect":
                return
            if msg.get("text") is not None:
                await send({"type": "websocket.send", "text": "echo:" + msg["text"]})
            else:
                await send({"type": "websocket.send", "bytes": msg["bytes"]})
    path = scope["path"]
    qs = dict(p.split("=") for p in scope["query_string"].decode().split("&") if "=" in p)
    if path == "/upload":
        total = 0
        while True:
            msg = await receive()
            total += len(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        body = json.dumps({"received": total}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
        return
    if path == "/stream":
        n, size = int(qs.get("n", "3")), int(qs.get("size", "10"))
        await send({"type": "http.response.start", "status": 200, "headers": []})  # chunked
        for _ in range(n):
            await send({"type": "http.response.body", "body": b"x" * size, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    body = b""
    if path == "/chunked-echo":
        chunks = []
        while True:
            msg = await receive()
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        body = b"".join(chunks)
    else:
        await receive()
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        body = json.dumps({"path": path, "method": scope["method"], "headers": headers,
                           "client": scope["client"][0]}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


@contextlib.asynccontextmanager
async def upstream_app(port: int) -> AsyncIterator[uvicorn.Server]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off",
                                           ws="websockets-sansio"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield server
    finally:
        server.should_exit = True
        await task


@dataclass
class Harness:
    proxy: EdgeProxy
    routes: Routes
    agent: FakeAgent

    @property
    def port(self) -> int:
        return self.proxy.port

    def add(self, label: str, vm_id: str, port: int, state: str = "running", vm_status: str = "running") -> None:
        self.routes.table[label] = Target("job-" + vm_id, 1, vm_id, self.agent.agent_id, vm_status, port)
        self.agent.states[vm_id] = state


@contextlib.asynccontextmanager
async def running_proxy(**settings: Any) -> AsyncIterator[Harness]:
    routes = Routes()
    agent = FakeAgent()
    proxy = EdgeProxy(Settings(**settings), routes, AgentRegistry([agent]))  # type: ignore[list-item]
    await proxy.start("127.0.0.1", 0)
    try:
        yield Harness(proxy, routes, agent)
    finally:
        await proxy.close()
