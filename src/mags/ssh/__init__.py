"""The SSH gateway (issue 7): per-sandbox keys, every channel proxied into the sandbox.

* :mod:`mags.ssh.provider` -- ``POST /mags-jobs/{id}/access {"port": 22}`` issues a key pair;
* :mod:`mags.ssh.gateway` -- the asyncssh server: auth, channel routing, revocation sweep;
* :mod:`mags.ssh.session` / :mod:`mags.ssh.forward` -- channels onto the agent's
  ``attach`` / ``connect`` WebSockets;
* :mod:`mags.ssh.keys`, :mod:`mags.ssh.ratelimit`, :mod:`mags.ssh.hostkey` -- key storage,
  failed-auth limits, the host key;
* ``python -m mags.ssh`` -- the gateway as its own process (:mod:`mags.ssh.__main__`).

``mags server`` runs the gateway in its own event loop (:func:`start_ssh_gateway`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mags.config import Settings
    from mags.core.db import Database
    from mags.ssh.gateway import AgentLookup, SshGateway

log = logging.getLogger(__name__)

__all__ = ["start_embedded_gateway", "start_ssh_gateway"]


async def start_ssh_gateway(
    settings: Settings, db: Database, agents: AgentLookup, **options: Any
) -> SshGateway:
    """Build an :class:`~mags.ssh.gateway.SshGateway` and start listening (settings.ssh_port)."""
    from mags.ssh.gateway import SshGateway

    gateway = SshGateway(settings, db, agents, **options)
    await gateway.start()
    return gateway


async def start_embedded_gateway(
    settings: Settings, db: Database, agents: AgentLookup, app: Any
) -> SshGateway | None:
    """The gateway inside ``mags server``: tells the app's ``"ssh"`` access provider its port.

    If the port is taken the server runs on without SSH (logged; the access call then says
    SSH is not enabled) rather than not at all.
    """
    from mags.errors import ConfigError

    providers = app.state.access_providers
    if not settings.ssh_enabled or not settings.ssh_embedded or "ssh" not in providers:
        return None  # no SSH, or the gateway is a process of its own
    from mags.ssh.agents import ChainedAgents, DbAgentDirectory

    try:
        gateway = await start_ssh_gateway(settings, db, ChainedAgents(agents, DbAgentDirectory(db)))
    except ConfigError as exc:
        log.error("%s; running without SSH access", exc)
        providers.pop("ssh", None)
        return None
    providers["ssh"].port = gateway.port
    return gateway
