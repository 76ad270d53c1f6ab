"""The ``"ssh"`` access provider: ``POST /mags-jobs/{id}/access {"port": 22}``.

Issues a fresh key pair bound to the job's sandbox and answers where the gateway listens.
The gateway may run in this process (``mags server``) or elsewhere (``python -m mags.ssh``):
both share the database, which is all the provider touches.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from mags.config import Settings
from mags.core.db import Database
from mags.core.states import VM_STARTING, still_starting
from mags.core.tokens import Principal
from mags.errors import Conflict, MagsError
from mags.ssh.keys import ALIVE_VM, SshKeyStore

log = logging.getLogger(__name__)

SSH_USER = "root"


class SshAccessProvider:
    """Grants SSH access: one key pair per call, valid for that job's sandbox until it stops."""

    def __init__(self, settings: Settings, db: Database, clock: Callable[[], float]) -> None:
        self.keys = SshKeyStore(db, clock)
        self.host = settings.ssh_public_host
        self.start_wait = settings.start_wait_s
        # the embedded server sets the bound port here once the gateway listens (ssh_port 0)
        self.port: int | None = settings.ssh_port or None

    async def grant(self, principal: Principal, job: Any, port: int) -> dict[str, Any]:
        """Issue a key for ``job`` (already checked to be the caller's); 409 unless it is alive."""
        m = job._mapping
        if m["vm_status"] in VM_STARTING:  # the access route waited start_wait_s for it
            raise still_starting(m["request_id"], self.start_wait)
        if m["vm_status"] not in ALIVE_VM or not m["vm_id"]:
            raise Conflict(
                f"job {m['request_id']} has no running or sleeping sandbox (vm_status {m['vm_status']})"
            )
        if self.port is None:
            raise MagsError("the SSH gateway of this server is not running", status_code=503)
        issued = await self.keys.issue(principal.user_id, m["request_id"], m["vm_id"])
        # the gateway's sweep deletes keys of stopped VMs; this keeps the table small even
        # when no gateway runs (ssh_embedded=false and none started yet)
        await self.keys.revoke_dead()
        log.info("ssh key %s issued for job %s (%s)", issued.fingerprint, m["request_id"], m["vm_id"])
        return {
            "ssh_host": self.host,
            "ssh_port": self.port,
            "ssh_user": SSH_USER,
            "ssh_private_key": issued.private_key,
            "ssh_key_fingerprint": issued.fingerprint,
        }


def register_ssh_access(app: Any, settings: Settings, db: Database, clock: Callable[[], float]) -> None:
    """Register the provider on an API app built by ``create_app`` (no-op unless ssh_enabled)."""
    if settings.ssh_enabled:
        app.state.access_providers["ssh"] = SshAccessProvider(settings, db, clock)
