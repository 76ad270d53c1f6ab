"""The gateway's own host key, made once and kept in ``<data_dir>/ssh_host_ed25519_key``."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from mags.errors import ConfigError

HOST_KEY_NAME = "ssh_host_ed25519_key"


def load_or_create_host_key(data_dir: Path) -> Any:
    """The host key (an asyncssh ``SSHKey``); created (mode 0600) on first use.

    The same key across restarts keeps clients' ``known_hosts`` valid.  Creation goes through
    a temp file and ``link`` so two processes starting at once end up with one key.
    """
    import asyncssh

    path = data_dir / HOST_KEY_NAME
    data_dir.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        key = asyncssh.generate_private_key("ssh-ed25519", comment="mags-gateway")
        tmp = path.with_name(f".{HOST_KEY_NAME}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(key.export_private_key("openssh"))
                fh.flush()
                os.fsync(fh.fileno())
            with contextlib.suppress(FileExistsError):  # another process won the race: use its key
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        with open(path.with_suffix(".pub"), "wb") as fh:
            fh.write(asyncssh.read_private_key(path).export_public_key("openssh"))
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        os.chmod(path, 0o600)  # someone loosened it: the key is a secret
    try:
        return asyncssh.read_private_key(path)
    except (OSError, asyncssh.KeyImportError) as exc:
        raise ConfigError(f"cannot read the SSH host key {path}: {exc}") from exc
