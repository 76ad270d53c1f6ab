"""``HttpAgentClient``: the control plane's handle on an agent, over HTTP (unix socket or TCP)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx

from mags.agent.models import (
    AgentEvent,
    AgentHealth,
    ExecRequest,
    ExecResult,
    ResizeRequest,
    SandboxInfo,
    SandboxRequest,
    SandboxSettings,
    StopRequest,
    SyncResult,
    WorkspaceInfo,
)
from mags.errors import AgentError, MagsError


class HttpAgentClient:
    """Implements ``AgentClient`` against an agent's HTTP API."""

    def __init__(self, agent_id: str, base_url: str = "http://agent", uds: str | None = None) -> None:
        self.agent_id = agent_id
        self.base_url = base_url
        self.uds = uds
        transport = httpx.AsyncHTTPTransport(uds=uds) if uds else None
        self._http = httpx.AsyncClient(
            base_url=base_url, transport=transport, timeout=httpx.Timeout(30.0, read=None)
        )

    async def _call(self, method: str, path: str, json: Any = None, timeout: float | None = 600.0) -> Any:
        try:
            resp = await self._http.request(method, path, json=json, timeout=timeout)
        except httpx.HTTPError as exc:
            raise AgentError(f"agent {self.agent_id} unreachable: {exc}") from exc
        if resp.status_code >= 400:
            try:
                msg = resp.json().get("error", resp.text)
            except ValueError:
                msg = resp.text
            raise MagsError(msg, status_code=resp.status_code)
        return resp.json()

    async def health(self) -> AgentHealth:
        return AgentHealth.model_validate(await self._call("GET", "/v1/health", timeout=10))

    async def create_sandbox(self, req: SandboxRequest) -> SandboxInfo:
        return SandboxInfo.model_validate(await self._call("POST", "/v1/sandboxes", req.model_dump()))

    async def get_sandbox(self, sandbox_id: str) -> SandboxInfo:
        return SandboxInfo.model_validate(await self._call("GET", f"/v1/sandboxes/{sandbox_id}"))

    async def list_sandboxes(self) -> list[SandboxInfo]:
        data = await self._call("GET", "/v1/sandboxes")
        return [SandboxInfo.model_validate(s) for s in data["sandboxes"]]

    async def exec(self, sandbox_id: str, req: ExecRequest) -> ExecResult:
        data = await self._call("POST", f"/v1/sandboxes/{sandbox_id}/exec", req.model_dump(), timeout=req.timeout + 30)
        return ExecResult.model_validate(data)

    async def stop_sandbox(self, sandbox_id: str, req: StopRequest) -> SandboxInfo:
        return SandboxInfo.model_validate(await self._call("POST", f"/v1/sandboxes/{sandbox_id}/stop", req.model_dump()))

    async def sync_sandbox(self, sandbox_id: str) -> SyncResult:
        return SyncResult.model_validate(await self._call("POST", f"/v1/sandboxes/{sandbox_id}/sync"))

    async def wake_sandbox(self, sandbox_id: str) -> SandboxInfo:
        return SandboxInfo.model_validate(await self._call("POST", f"/v1/sandboxes/{sandbox_id}/wake"))

    async def touch_sandbox(self, sandbox_id: str) -> None:
        """Mark traffic as activity for the idle timer; never wakes a sleeping sandbox."""
        await self._call("POST", f"/v1/sandboxes/{sandbox_id}/touch", timeout=10)

    async def update_sandbox(self, sandbox_id: str, req: SandboxSettings) -> SandboxInfo:
        data = await self._call("POST", f"/v1/sandboxes/{sandbox_id}/settings", req.model_dump())
        return SandboxInfo.model_validate(data)

    async def list_workspaces(self) -> list[WorkspaceInfo]:
        data = await self._call("GET", "/v1/workspaces")
        return [WorkspaceInfo.model_validate(w) for w in data["workspaces"]]

    async def resize_workspace(self, workspace_id: str, req: ResizeRequest) -> WorkspaceInfo:
        data = await self._call("POST", f"/v1/workspaces/{workspace_id}/resize", req.model_dump())
        return WorkspaceInfo.model_validate(data)

    async def delete_workspace(self, workspace_id: str) -> None:
        await self._call("DELETE", f"/v1/workspaces/{workspace_id}")

    async def open_websocket(self, path: str) -> Any:
        """A WebSocket to the agent (``attach`` / ``connect``, see agent/attach.py).

        Returns a ``websockets`` client connection (use ``async with``); the caller closes it.
        """
        from websockets.asyncio.client import connect, unix_connect

        ws_url = self.base_url.replace("http://", "ws://").replace("https://", "wss://").rstrip("/") + path
        try:
            if self.uds:
                return await unix_connect(self.uds, ws_url, max_size=None, ping_interval=None)
            return await connect(ws_url, max_size=None, ping_interval=None)
        except OSError as exc:
            raise AgentError(f"agent {self.agent_id} unreachable: {exc}") from exc

    async def open_attach(self, sandbox_id: str) -> Any:
        """Interactive process in a sandbox: send the JSON start message first (agent/attach.py)."""
        return await self.open_websocket(f"/v1/sandboxes/{sandbox_id}/attach")

    async def open_connect(self, sandbox_id: str, port: int) -> Any:
        """A TCP stream to ``port`` inside the sandbox, as binary WebSocket messages."""
        return await self.open_websocket(f"/v1/sandboxes/{sandbox_id}/connect?port={int(port)}")

    async def events(self, after: int = 0) -> AsyncIterator[AgentEvent]:
        """Stream events with seq > after until the connection drops (raises AgentError then)."""
        try:
            async with self._http.stream("GET", "/v1/events", params={"after": after}, timeout=None) as resp:
                if resp.status_code != 200:
                    raise AgentError(f"agent {self.agent_id} event stream answered {resp.status_code}")
                async for line in resp.aiter_lines():
                    if line.strip():
                        yield AgentEvent.model_validate_json(line)
        except httpx.HTTPError as exc:
            raise AgentError(f"agent {self.agent_id} event stream lost: {exc}") from exc

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran (an event stream then ends for good)."""
        return self._http.is_closed

    async def close(self) -> None:
        await self._http.aclose()
