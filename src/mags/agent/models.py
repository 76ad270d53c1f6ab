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
    POST   /v1/sandboxes/{id}/sync            -> SyncResult       (persistent workspace, VM keeps running)
    POST   /v1/sandboxes/{id}/wake            -> SandboxInfo      (no-op unless sleeping)
    POST   /v1/sandboxes/{id}/touch           -> {}               (activity for the idle timer)
    POST   /v1/sandboxes/{id}/settings SandboxSettings -> SandboxInfo
    WS     /v1/sandboxes/{id}/attach          interactive process (see agent/attach.py)
    WS     /v1/sandboxes/{id}/connect?port=N  a TCP stream to a port inside the sandbox
    GET    /v1/workspaces                     -> {"workspaces": [WorkspaceInfo]}
    POST   /v1/workspaces/{id}/resize ResizeRequest -> WorkspaceInfo (409 while in use)
    DELETE /v1/workspaces/{id}                -> {}  local copy only (409 while in use)
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


class LayerRef(BaseModel):
    """A read-only base layer: a snapshot of another workspace (its own store prefix)."""

    workspace_id: str
    snapshot_id: str


class WorkspaceRef(BaseModel):
    """The workspace a sandbox runs on.

    The agent keeps the workspace's writable layer on a size-limited local disk.  For a
    persistent workspace it restores ``snapshot_id`` from the object store unless its local
    copy already is that snapshot (or newer, unsynced, on top of it), and reports every sync
    as a ``synced`` event that the control plane commits with a compare-and-swap.
    """

    workspace_id: str  # agent-side key, unique across tenants ("u<user id>-<name>"); "" for ephemeral
    # ephemeral: nothing kept, only ``layers`` (``--base W`` without ``-w``)
    mode: Literal["local", "persistent", "ephemeral"] = "local"
    snapshot_id: str | None = None  # committed head to start from (persistent); None = empty
    layers: list[LayerRef] = Field(default_factory=list)  # read-only bases, topmost first
    sync: bool = True  # persistent: sync to the object store (False = no_sync)
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
    startup_command: str | None = None  # run in the background whenever the sandbox wakes
    no_sleep: bool = False  # persistent only: never auto-sleep
    idle_timeout_s: float | None = None  # None: the agent's setting
    workspace: WorkspaceRef | None = None
    files: list[FileRef] = Field(default_factory=list)
    # re-create a persistent job's VM whose sandbox was lost (its server or host went down):
    # "sleeping" registers it asleep (it boots on the next wake); "running" boots it now from
    # its workspace and runs the startup command, and the script too if ``rerun_script``
    resume: Literal["running", "sleeping"] | None = None
    rerun_script: bool = False


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
    workspace_id: str | None = None
    no_sleep: bool = False
    startup_command: str | None = None
    last_activity: float | None = None  # unix time of the last exec/SSH/URL traffic


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
    # the stream had more than the agent's ``max_exec_output_bytes``: the rest was dropped
    stdout_truncated: bool = False
    stderr_truncated: bool = False

    @property
    def truncated(self) -> bool:
        return self.stdout_truncated or self.stderr_truncated


class SandboxSettings(BaseModel):
    """Live changes to a sandbox (PATCH /mags-jobs/{id}); None = unchanged."""

    no_sleep: bool | None = None
    startup_command: str | None = None
    clear_startup_command: bool = False


class SyncResult(BaseModel):
    workspace_id: str
    snapshot_id: str | None  # None: the workspace was never synced and nothing changed
    parent_snapshot_id: str | None
    changed: bool
    bytes_uploaded: int = 0
    files: int = 0
    seconds: float = 0.0


class WorkspaceInfo(BaseModel):
    """A workspace's local copy on this agent."""

    workspace_id: str
    mode: Literal["local", "persistent"]
    disk_gb: int
    used_bytes: int
    in_use: bool
    synced_snapshot_id: str | None
    last_used: float


class ResizeRequest(BaseModel):
    disk_gb: int


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
      ``synced``   a workspace sync finished             (data: SyncResult fields + "trigger":
                                                        periodic | stop | sleep | request)
    """

    seq: int
    type: Literal["started", "log", "exit", "state", "synced"]
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

    async def sync_sandbox(self, sandbox_id: str) -> SyncResult: ...

    async def wake_sandbox(self, sandbox_id: str) -> SandboxInfo: ...

    async def touch_sandbox(self, sandbox_id: str) -> None: ...

    async def update_sandbox(self, sandbox_id: str, req: SandboxSettings) -> SandboxInfo: ...

    async def list_workspaces(self) -> list[WorkspaceInfo]: ...

    async def resize_workspace(self, workspace_id: str, req: ResizeRequest) -> WorkspaceInfo: ...

    async def delete_workspace(self, workspace_id: str) -> None: ...

    def events(self, after: int = 0) -> AsyncIterator[AgentEvent]: ...

    async def close(self) -> None: ...
