"""``mags server``: the control plane (API, dispatcher, event ingest) plus the local agent.

:func:`build_control_plane` wires database, API app, dispatcher and one event ingest per agent
in the running event loop; tests use it directly with fake agents.  :func:`serve` is the
blocking entry the CLI calls: migrations, first-start admin token, the local agent, uvicorn,
and a graceful shutdown on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Self

import uvicorn
from fastapi import FastAPI

from mags.agent.models import AgentClient
from mags.api.app import create_app
from mags.config import Settings
from mags.core.bootstrap import (
    ADMIN_TOKEN_FILE,
    ensure_admin_token,
    secure_data_dir,
    sqlite_files,
    use_private_umask,
    write_client_config,
)
from mags.core.db import Database, create_database
from mags.core.ids import Clock
from mags.core.files import FileStore
from mags.core.jobs import JobStore
from mags.core.migrate import run_migrations
from mags.core.notify import JobNotifier
from mags.core.tokens import TokenStore
from mags.core.workspace_upkeep import WorkspaceUpkeep
from mags.errors import ConfigError
from mags.scheduler.applier import StateApplier
from mags.scheduler.changes import SHUTDOWN_REASON
from mags.scheduler.control import JobController
from mags.scheduler.cron import CronScheduler
from mags.scheduler.dispatcher import Dispatcher
from mags.scheduler.ingest import EventIngest
from mags.scheduler.reconcile import (
    Housekeeper,
    finish_active,
    kept_at_shutdown,
    mark_shutdown,
    reconcile_at_start,
    register_agents,
)
from mags.scheduler.registry import AgentRegistry
from mags.api.urls import install_urls
from mags.proxy import start_embedded_proxy
from mags.ssh import start_embedded_gateway
from mags.ssh.provider import register_ssh_access
from mags.scheduler.retention import Janitor
from mags.scheduler.workspace_admin import WorkspaceAdmin
from mags.scheduler.workspace_release import WorkspaceRelease
from mags.storage.objectstore import create_object_store

log = logging.getLogger(__name__)

# after the agent stopped its sandboxes, how long to wait for their last events
EVENT_DRAIN_S = 0.2


@dataclass
class ControlPlane:
    """Everything the control plane runs in one event loop."""

    settings: Settings
    db: Database
    clock: Clock
    notifier: JobNotifier
    jobs: JobStore
    tokens: TokenStore
    registry: AgentRegistry
    applier: StateApplier
    dispatcher: Dispatcher
    controller: JobController
    app: FastAPI
    housekeeper: Housekeeper
    ingests: list[EventIngest] = field(default_factory=list)
    cron: CronScheduler | None = None
    janitor: Janitor | None = None  # local workspace / upload retention, snapshot GC
    keep_vms: bool = True  # persistent VMs sleep through a shutdown instead of ending
    kept: dict[str, str] = field(default_factory=dict)  # job id -> vm id, kept asleep at shutdown
    _stopping: bool = False
    _closed: bool = False

    async def start(self) -> None:
        """Reconcile with the agents, then start ingest, applier and dispatcher."""
        self.applier.start()
        await register_agents(self.db, self.registry, self.clock())
        await reconcile_at_start(self.db, self.registry, self.applier, self.clock, self.settings)
        for ingest in self.ingests:
            ingest.start()
        self.dispatcher.start()
        self.housekeeper.start()
        if self.cron is not None:
            self.cron.start()
        if self.janitor is not None:
            self.janitor.start()

    async def begin_shutdown(self, reason: str = SHUTDOWN_REASON) -> None:
        """Stop dispatching and record why running sandboxes are about to stop (not pending ones)."""
        if self._stopping:
            return
        self._stopping = True
        self.notifier.close()
        if self.cron is not None:
            await self.cron.stop()  # before the dispatcher: a claimed run is submitted first
        await self.housekeeper.stop()
        if self.janitor is not None:
            await self.janitor.stop()
        await self.dispatcher.stop()
        await self.applier.drain()
        # persistent VMs sleep through the restart (synced, freed) and come back at the next start
        self.kept = await kept_at_shutdown(self.db, self.registry.ids()) if self.keep_vms else {}
        await mark_shutdown(self.db, self.registry.ids(), reason, self.clock, keep=self.kept)

    async def close(self, reason: str = SHUTDOWN_REASON) -> None:
        """Finish shutting down: end jobs still active, stop tasks, close the database.

        Jobs whose script has not started are not ended: pending or claimed, they run after
        the next start (scheduler/reconcile.py).
        """
        if self._closed:
            return
        await self.begin_shutdown(reason)
        await asyncio.sleep(0)  # let the ingest hand over what the agent sent while stopping
        await self.applier.drain()
        for ingest in self.ingests:
            await ingest.stop()
        ended = await finish_active(self.db, self.registry.ids(), self.applier, reason, self.clock, self.kept)
        if ended:
            log.info("%d job(s) ended: %s", ended, reason)
        await self.applier.stop()
        for agent in self.registry.all():
            with contextlib.suppress(Exception):
                await agent.close()
        await self.db.close()
        self._closed = True

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def build_control_plane(
    settings: Settings,
    agents: Sequence[AgentClient],
    *,
    db: Database | None = None,
    migrate: bool = True,
    start: bool = True,
    sweep_interval: float = 2.0,
    agent_urls: Mapping[str, str] | None = None,
    clock: Clock | None = None,
) -> ControlPlane:
    """Create and (by default) start a control plane on ``settings.db_url`` with ``agents``.

    ``agent_urls`` says where each agent listens (agent id -> url); an agent found in the
    database under another id at one of these urls is treated as restarted (its jobs end).
    ``clock`` replaces the wall clock (tests drive cron schedules with it).
    """
    db = db or create_database(settings.db_url)
    if migrate:
        await run_migrations(db)
    clock = clock if clock is not None else Clock()
    notifier = JobNotifier()
    jobs = JobStore(db, clock)
    tokens = TokenStore(db, clock)
    registry = AgentRegistry(agents, agent_urls)
    applier = StateApplier(
        db, notifier, clock, max_log_lines=settings.max_log_lines, max_log_bytes=settings.max_log_bytes,
        local_retention_s=settings.local_workspace_retention_s,
    )  # fmt: skip
    dispatcher = Dispatcher(settings, db, registry, applier, clock, sweep_interval=sweep_interval)
    workspaces = WorkspaceUpkeep(db, clock)
    files = FileStore(db, clock, settings.data_dir / "files", settings.file_retention_s)
    controller = JobController(
        jobs, applier, registry, dispatcher, clock, settings=settings, workspaces=workspaces, files=files
    )
    object_store = create_object_store(settings)  # the control plane deletes and GCs workspace data
    release = WorkspaceRelease(workspaces, controller)  # a delete stops an idle VM on the workspace
    admin = WorkspaceAdmin(workspaces, registry, object_store, controller.admission.lock, release)
    app = create_app(settings, db, controller, notifier, tokens=tokens, workspace_admin=admin)
    register_ssh_access(app, settings, db, clock)  # "ssh" access provider (if ssh_enabled)
    install_urls(app, settings, db, tokens, clock)  # "url" access provider, /mags-url-aliases
    cp = ControlPlane(
        settings=settings,
        db=db,
        clock=clock,
        notifier=notifier,
        jobs=jobs,
        tokens=tokens,
        registry=registry,
        applier=applier,
        dispatcher=dispatcher,
        controller=controller,
        app=app,
        housekeeper=Housekeeper(db, registry, applier, clock),
        ingests=[EventIngest(a, applier) for a in agents],
        cron=CronScheduler(settings, db, controller, clock),
        janitor=Janitor(settings, workspaces, files, admin, object_store, clock),
    )
    if start:
        await cp.start()
    return cp


# ---------------------------------------------------------------------------- serve()
class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: ours shuts the whole control plane down."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def serve(settings: Settings, *, loop: Literal["asyncio", "uvloop"] | None = None) -> None:
    """Run ``mags server`` until SIGTERM/SIGINT (blocking).

    The event loop is the setting ``event_loop``: the stock asyncio loop by default, or
    uvloop.  Both work: the agent starts sandbox processes through ``runtime/spawn.py``
    (``Popen``'s vfork + a pidfd), never libuv's spawn, which would ``fork()`` the whole
    server per sandbox.  End to end (bench/api.py) uvloop measured no faster here.
    """
    # first: nothing the server writes (database, tokens, logs, objects) may be readable by others
    use_private_umask()
    from mags.runtime.mountns import enter_private_mount_namespace

    # before any thread exists: our mounts (workspace disks, scratch) then die with us
    enter_private_mount_namespace()
    loop_factory: Any = None
    if (loop or settings.event_loop) == "uvloop":
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve_async(settings))


async def serve_async(settings: Settings) -> None:
    """The body of :func:`serve`, in the caller's event loop."""
    from mags.agent.local import start_local_agent  # the agent is optional for API-only uses

    use_private_umask()  # also here: tests and embedders call this without serve()
    _secure_state(settings)
    db = create_database(settings.db_url)
    await run_migrations(db)
    token = await ensure_admin_token(TokenStore(db, Clock()), settings.data_dir)
    if token is not None:
        # never the token itself: this output usually ends up in a log file
        print(f"admin token written to {settings.data_dir / ADMIN_TOKEN_FILE} (mode 0600)", flush=True)
        written = write_client_config(settings.api_url, token)
        if written is not None:
            print(f"client configuration written to {written}", flush=True)

    handle = await start_local_agent(settings)
    try:
        local_url = f"unix://{settings.agent_socket}"
        cp = await build_control_plane(
            settings, [handle.client], db=db, migrate=False, agent_urls={handle.client.agent_id: local_url}
        )
        ssh = await start_embedded_gateway(settings, db, cp.registry, cp.app)
        edge = await start_embedded_proxy(settings, db, cp.registry, cp.app)  # public URLs (if proxy_enabled)
    except BaseException:
        await handle.stop()
        await db.close()
        raise
    server = _Server(
        uvicorn.Config(
            cp.app,
            host=settings.host,
            port=settings.port,
            http="httptools",
            lifespan="off",
            access_log=False,
            log_level="warning",
            timeout_graceful_shutdown=5,
            server_header=False,
        )
    )
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if server.should_exit:
            server.force_exit = True
        server.should_exit = True
        cp.notifier.close()  # answer long-polls and end log follows now

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        serve_task = asyncio.create_task(server.serve(), name="mags-uvicorn")
        while not server.started and not serve_task.done():
            await asyncio.sleep(0.01)
        if not server.started:
            with contextlib.suppress(BaseException):
                await serve_task
            raise ConfigError(f"cannot listen on {settings.host}:{settings.port} (see the log above)")
        runtime = await _runtime_name(handle)
        print(f"mags server ready on http://{settings.host}:{settings.port} (runtime: {runtime})", flush=True)
        await serve_task
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if ssh is not None:
            await ssh.close()
        if edge is not None:
            await edge.close()
        await cp.begin_shutdown(SHUTDOWN_REASON)
        try:
            await handle.stop(keep=set(cp.kept.values()))
            await asyncio.sleep(EVENT_DRAIN_S)  # the agent's last exit/state events
        finally:
            await cp.close(SHUTDOWN_REASON)
        print("mags server stopped", flush=True)


def _secure_state(settings: Settings) -> None:
    """Make the data dir 0700 and tighten what an older version left readable by others."""
    extra = sqlite_files(settings.db_url)
    if settings.object_store == "local":
        extra.append(settings.local_store_root)
    tightened = secure_data_dir(settings.data_dir, extra)
    if tightened:
        log.warning("made private (readable by root only): %s", ", ".join(str(p) for p in tightened))


async def _runtime_name(handle: Any) -> str:
    runtime = getattr(handle, "runtime", None)
    name = runtime if isinstance(runtime, str) else getattr(runtime, "name", None)
    if isinstance(name, str):
        return name
    try:
        return (await handle.client.health()).runtime
    except Exception:  # noqa: BLE001 - only for the ready line
        return "unknown"
