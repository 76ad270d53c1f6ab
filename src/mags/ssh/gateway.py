"""The SSH gateway: authenticates per-sandbox keys and proxies every channel into the sandbox.

Auth flow: the client must log in as ``root`` with a key issued by ``POST .../access``; the
gateway finds the key by fingerprint (:class:`~mags.ssh.keys.SshKeyStore`), and accepts it
only while that job's VM is running or sleeping.  Failures are logged and rate-limited per
client address (:class:`~mags.ssh.ratelimit.AuthRateLimiter`).

Channels: a session becomes an ``attach`` WebSocket to the sandbox's agent
(:mod:`mags.ssh.session`), a direct-tcpip channel a ``connect`` WebSocket
(:mod:`mags.ssh.forward`).  Each channel re-checks that the key's sandbox is still alive.
There is no other kind of channel and no code path that runs anything on the gateway's host.
Remote forwarding, agent and X11 forwarding are refused.

Revocation: keys of stopped VMs are refused at once (liveness at auth and at every channel);
a sweeper deletes their rows and closes connections to stopped sandboxes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from typing import Any, Protocol

import asyncssh

from mags.config import Settings
from mags.core.db import Database
from mags.core.tasks import Periodic
from mags.errors import ConfigError
from mags.ssh.forward import ForwardSession, names_sandbox
from mags.ssh.hostkey import load_or_create_host_key
from mags.ssh.keys import KeyTarget, SshKeyStore, public_key_text
from mags.ssh.ratelimit import AuthRateLimiter, StartupLimiter
from mags.ssh.session import AttachSession

log = logging.getLogger(__name__)

SSH_USER = "root"
SWEEP_INTERVAL_S = 5.0
LOGIN_TIMEOUT_S = 30.0


class AgentLookup(Protocol):
    """Finds the agent of a job (``AgentRegistry`` in ``mags server``; the database elsewhere)."""

    def get(self, agent_id: str | None) -> Any: ...


class Refused(Exception):
    """A channel cannot be opened: the message goes to the client."""


class SshGateway:
    """asyncssh server + key store + agent lookup; :meth:`start` listens, :meth:`close` stops."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        agents: AgentLookup,
        *,
        limiter: AuthRateLimiter | None = None,
        clock: Callable[[], float] = time.time,
        sweep_interval: float = SWEEP_INTERVAL_S,
    ) -> None:
        self.settings = settings
        self.keys = SshKeyStore(db, clock)
        self.agents = agents
        self.limiter = limiter if limiter is not None else AuthRateLimiter()
        self.startups = StartupLimiter()
        self.sweep_interval = sweep_interval
        # open sessions tell the agent they are there a few times per idle timeout
        self.keepalive_s = max(1.0, min(60.0, settings.idle_timeout_s / 3))
        self.port: int | None = None
        self._server: Any = None
        self._sweeper = Periodic("mags-ssh-sweeper", sweep_interval, self.sweep, "ssh key sweep failed")
        self._conns: dict[str, set[_Connection]] = {}  # job id -> authenticated connections

    # ------------------------------------------------------------------ lifetime
    async def start(self, host: str | None = None, port: int | None = None) -> int:
        """Listen (``settings.host``/``ssh_port`` unless given); returns the bound port."""
        host_key = load_or_create_host_key(self.settings.data_dir)
        bind = self.settings.host if host is None else host
        try:
            self._server = await asyncssh.create_server(
                lambda: _Connection(self),
                "" if bind in ("0.0.0.0", "::") else bind,
                self.settings.ssh_port if port is None else port,
                server_host_keys=[host_key],
                server_version="mags",
                encoding=None,
                line_editor=False,
                allow_scp=False,  # scp -O runs `scp -t` through exec like any command
                agent_forwarding=False,
                x11_forwarding=False,
                login_timeout=LOGIN_TIMEOUT_S,
                keepalive_interval=30,
                keepalive_count_max=4,
            )
        except OSError as exc:
            raise ConfigError(
                f"SSH gateway cannot listen on {bind}:{port or self.settings.ssh_port}: {exc}"
            ) from exc
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._sweeper.start()
        log.info("SSH gateway listening on %s:%d", bind, self.port)
        return self.port

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        await self._sweeper.stop()
        if self._server is not None:
            self._server.close()
            for conns in list(self._conns.values()):
                for conn in list(conns):
                    conn.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None
        close_agents = getattr(self.agents, "close", None)  # clients the gateway made itself
        if close_agents is not None:
            with contextlib.suppress(Exception):
                await close_agents()

    # ------------------------------------------------------------------ auth
    async def authenticate(self, peer: str, username: str, key: Any) -> KeyTarget | None:
        """The sandbox ``key`` opens for ``username``, or None (logged; counted against ``peer``)."""
        fingerprint = key.get_fingerprint("sha256")
        reason = None
        target = None
        if username != SSH_USER:
            reason = f"user {username!r} is not {SSH_USER!r}"
        else:
            target = await self.keys.find(fingerprint, public_key_text(key))
            if target is None:
                reason = "unknown key"
            elif not target.alive:
                reason = f"sandbox of job {target.job_id} is {target.vm_status}"
                target = None
        if target is None:
            banned = self.limiter.failure(peer)
            log.warning(
                "ssh auth failed from %s: %s (key %s)%s",
                peer,
                reason,
                fingerprint,
                "; address banned" if banned else "",
            )
        return target

    # ------------------------------------------------------------------ channels
    async def _live(self, target: KeyTarget) -> tuple[Any, KeyTarget]:
        """The agent of the key's sandbox, if it still runs (checked at every channel)."""
        now = await self.keys.target(target.job_id)
        if now is None or now.vm_id != target.vm_id or not now.alive:
            raise Refused("this sandbox has stopped; run `mags ssh` (or the access call) again")
        agent = self.agents.get(now.agent_id)
        refresh = getattr(self.agents, "refresh", None)  # a directory read from the database
        if agent is None and refresh is not None:
            await refresh()
            agent = self.agents.get(now.agent_id)
        if agent is None:
            raise Refused("the sandbox's host is not reachable from this SSH gateway")
        return agent, now

    async def open_session(self, target: KeyTarget, peer: str) -> AttachSession:
        """A session channel for the key's sandbox, refused if it stopped since the login."""
        try:
            agent, now = await self._live(target)
        except Refused as exc:
            log.info("ssh session from %s refused: %s", peer, exc)
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, str(exc)) from exc
        # attach wakes a sleeping sandbox; the agent counts the traffic as activity
        return AttachSession(lambda: agent.open_attach(now.vm_id), f"{peer}->{now.vm_id}", self.keepalive_s)

    async def open_forward(self, target: KeyTarget, host: str, port: int) -> tuple[Any, Any]:
        """A ``connect`` WebSocket to ``port`` of the sandbox, if ``host`` names the sandbox.

        Also returns an opener of an ``attach`` WebSocket, for the loopback relay (forward.py).
        """
        agent, now = await self._live(target)
        allowed = names_sandbox(host)
        if allowed is None:  # an address: only the sandbox's own
            with contextlib.suppress(Exception):
                allowed = (await agent.get_sandbox(now.vm_id)).ip == host
        if not allowed:
            raise Refused(f"only ports of the sandbox itself can be forwarded (not {host})")
        if not 1 <= port <= 65535:
            raise Refused(f"bad port {port}")
        return await agent.open_connect(now.vm_id, port), lambda: agent.open_attach(now.vm_id)

    # ------------------------------------------------------------------ revocation
    def _track(self, conn: _Connection) -> None:
        assert conn.target is not None
        self._conns.setdefault(conn.target.job_id, set()).add(conn)

    def _untrack(self, conn: _Connection) -> None:
        if conn.target is not None:
            conns = self._conns.get(conn.target.job_id)
            if conns is not None:
                conns.discard(conn)
                if not conns:
                    del self._conns[conn.target.job_id]

    async def sweep(self) -> None:
        """Delete keys of stopped VMs; close connections into sandboxes that stopped."""
        revoked = await self.keys.revoke_dead()
        if revoked:
            log.info("revoked %d ssh key(s) of stopped sandboxes", revoked)
        alive = await self.keys.alive_jobs(list(self._conns))
        for job_id in [j for j in self._conns if j not in alive]:
            for conn in list(self._conns.get(job_id, ())):
                log.info("closing ssh connection from %s: sandbox of job %s stopped", conn.peer, job_id)
                conn.close()



def _quick_ack_until_login(conn: Any) -> None:
    """ACK every segment at once until the login is done (Linux ``TCP_QUICKACK``).

    OpenSSH sends NEWKEYS and SERVICE_REQUEST as two small writes with Nagle on; the server
    has nothing to answer NEWKEYS with, so its delayed ACK held SERVICE_REQUEST back ~40 ms
    on every login (measured).  ``TCP_QUICKACK`` is not sticky, so it is set again before each
    received chunk -- only during the handshake (``auth_completed`` restores the plain path).
    """
    sock = conn.get_extra_info("socket")
    if sock is None or not hasattr(socket, "TCP_QUICKACK"):
        return

    received = conn.data_received

    def data_received(data: bytes, datatype: Any = None) -> None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        received(data, datatype)

    conn.data_received = data_received  # the transport calls this instance attribute


class _Connection(asyncssh.SSHServer):
    """One client connection (asyncssh calls these methods)."""

    def __init__(self, gateway: SshGateway) -> None:
        self.gateway = gateway
        self.peer = "?"
        self.target: KeyTarget | None = None
        self._conn: Any = None
        self._starting = False  # counted in gateway.startups until the login ends

    def connection_made(self, conn: Any) -> None:
        self._conn = conn
        peer = conn.get_extra_info("peername")
        self.peer = str(peer[0]) if peer else "?"
        if self.gateway.limiter.banned(self.peer):
            log.info("ssh connection from banned address %s dropped", self.peer)
            conn.abort()
            return
        self._starting = self.gateway.startups.begin(self.peer)
        if not self._starting:
            log.warning("ssh connection from %s dropped: too many logins in progress", self.peer)
            conn.abort()
            return
        _quick_ack_until_login(conn)

    def _login_over(self) -> None:
        if self._starting:
            self._starting = False
            self.gateway.startups.end(self.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        self._login_over()
        self.gateway._untrack(self)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    # -- auth: public keys only, always required
    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    async def validate_public_key(self, username: str, key: Any) -> bool:
        if self.gateway.limiter.banned(self.peer):
            self._disconnect_banned()
            return False
        target = await self.gateway.authenticate(self.peer, username, key)
        if target is None:
            if self.gateway.limiter.banned(self.peer):
                self._disconnect_banned()
            return False
        self.target = target
        return True

    def _disconnect_banned(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.disconnect(
                asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE,
                "too many failed authentications; try again later",
            )

    def auth_completed(self) -> None:
        assert self.target is not None
        self._login_over()
        self._conn.__dict__.pop("data_received", None)  # back to the class's method
        log.info("ssh login from %s into %s (job %s)", self.peer, self.target.vm_id, self.target.job_id)
        self.gateway._track(self)

    # -- channels: everything goes into the sandbox
    def session_requested(self) -> Any:
        assert self.target is not None
        return self.gateway.open_session(self.target, self.peer)

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str, orig_port: int) -> Any:
        return self._forward(dest_host, dest_port)

    async def _forward(self, dest_host: str, dest_port: int) -> ForwardSession:
        target = self.target
        assert target is not None
        try:
            ws, open_relay = await self.gateway.open_forward(target, dest_host, dest_port)
        except Refused as exc:
            log.info("ssh forward from %s to %s:%d refused: %s", self.peer, dest_host, dest_port, exc)
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, str(exc)) from exc
        except Exception as exc:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, str(exc)) from exc
        return ForwardSession(ws, f"{self.peer}->{target.vm_id}:{dest_port}", dest_port, open_relay)

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        log.info("ssh remote forwarding from %s refused", self.peer)
        return False

    def unix_connection_requested(self, dest_path: str) -> bool:
        return False

    def unix_server_requested(self, listen_path: str) -> bool:
        return False
