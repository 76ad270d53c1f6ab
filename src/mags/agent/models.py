"""Wire models of the agent API: what the control plane sends to a host agent and gets back.

The agent serves this API over HTTP (a unix socket in the embedded default, TCP for a remote
host).  The control plane only ever talks to an agent through :class:`AgentClient`.

Endpoints (all JSON, prefix ``/v1``)::

    GET    /v1/health                         -> AgentHealth
    POST   /v1/sandboxes          SandboxRequest -> SandboxInfo   (returns once the script runs)
    GET    /v1/sandboxes                      -> {"sandboxes": [SandboxInfo]}
    GET    /v1/sandboxes/{id}                 -> SandboxInfo
    POST   /v1/sandboxes/{id}/exec ExecRequest -> ExecResult
    POST   /v1/sandboxes/{id}/stop StopRequest -> SandboxInfo     (syncs persistent workspaces first)
    GET    /v1/events?after=SEQ               -> NDJSON stream of AgentEvent, forever

Events carry a per-agent sequence number; a control plane that reconnects asks for
``after=<last seq it processed>`` and gets what it missed (the agent keeps a bounded buffer).
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from collections.abc import AsyncIterator

from pydantic import BaseModel, Field


class FileRef(BaseModel):
    """An uploaded file to place at /uploads/<name> and /root/<name> (issue 5)."""

    name: str
    host_path: str  # where the agent can read it
    mode: int = 0o644


class WorkspaceRef(BaseModel):
    """The workspace a sandbox runs on (issue 4)."""

    workspace_id: str  # internal unique id (owner-scoped name resolved by the control plane)
    mode: Literal["local", "persistent"] = "local"
    snapshot_id: str | None = None  # head to restore when the host lacks it (persistent)
    base_workspace_id: str | None = None
    base_snapshot_id: str | None = None
    sync: bool = True  # persistent: sync to object storage (False = no_sync)


class SandboxRequest(BaseModel):
    sandbox_id: str  # == the job's vm_id, chosen by the control plane
    job_id: str
    script: str
    environment: dict[str, str] = Field(default_factory=dict)
    image: str = "standard"
    memory_mb: int | None = None
    pids: int | None = None
    cpus: float | None = None
    disk_gb: int | None = None
    timeout_s: float | None = None  # wall-clock limit for the script; None = server default
    persistent: bool = False  # keep the sandbox after the script exits
    startup_command: str | None = None
    workspace: WorkspaceRef | None = None
    files: list[FileRef] = Field(default_factory=list)


SandboxState = Literal["starting", "running", "sleeping", "stopping", "stopped"]


class SandboxInfo(BaseModel):
    sandbox_id: str
    job_id: str
    state: SandboxState
    ip: str | None = None
    runtime: str
    script_running: bool = False
    created_at: float
    exit_code: int | None = None
    reason: str | None = None


class ExecRequest(BaseModel):
    command: str
    timeout: float = 30.0
    environment: dict[str, str] = Field(default_factory=dict)
    cwd: str = "/root"


class ExecResult(BaseModel):
    exit_code: int
    stdout: str
    stderr: str
    timed_out: bool = False


class StopRequest(BaseModel):
    reason: str = "stopped by user"
    sync: bool = True


class AgentHealth(BaseModel):
    agent_id: str  # stable across restarts of the agent (kept in its data dir)
    boot_id: str  # new at every start: event sequence numbers restart with it
    runtime: str
    sandboxes: int
    version: str


class AgentEvent(BaseModel):
    """One event on the agent's stream.

    type:
      ``started``  sandbox running, script spawned       (ip)
      ``log``      a line of script output               (source, message)
      ``exit``     the script exited                     (exit_code, duration_ms, reason)
      ``state``    the sandbox changed state             (state, reason)
    """

    seq: int
    type: Literal["started", "log", "exit", "state"]
    sandbox_id: str
    job_id: str
    ts: float
    source: Literal["stdout", "stderr", "system"] | None = None
    message: str | None = None
    exit_code: int | None = None
    duration_ms: int | None = None
    reason: str | None = None
    state: SandboxState | None = None
    ip: str | None = None
    data: dict[str, Any] | None = None


class AgentClient(Protocol):
    """How the control plane reaches one agent."""

    agent_id: str

    async def health(self) -> AgentHealth: ...

    async def create_sandbox(self, req: SandboxRequest) -> SandboxInfo: ...

    async def get_sandbox(self, sandbox_id: str) -> SandboxInfo: ...

    async def list_sandboxes(self) -> list[SandboxInfo]: ...

    async def exec(self, sandbox_id: str, req: ExecRequest) -> ExecResult: ...

    async def stop_sandbox(self, sandbox_id: str, req: StopRequest) -> SandboxInfo: ...

    def events(self, after: int = 0) -> AsyncIterator[AgentEvent]: ...

    async def close(self) -> None: ...
