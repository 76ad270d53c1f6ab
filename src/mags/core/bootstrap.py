"""First-start setup: the admin user, its token file, and the local client config."""

from __future__ import annotations

import json
import os
from pathlib import Path

from mags.core.tokens import TokenStore

ADMIN_USER = "admin"
ADMIN_TOKEN_FILE = "admin.token"


def _write_private(path: Path, text: str, *, exclusive: bool) -> bool:
    """Write ``text`` to ``path`` with mode 0600 from the first byte; False if it exists."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, 0o600)  # O_CREAT's mode is masked by the umask and ignored for old files
    return True


async def ensure_admin_token(store: TokenStore, data_dir: Path) -> str | None:
    """Create the admin user and a token on first start; return the new token, else None.

    A token is also issued when ``<data_dir>/admin.token`` is missing, so deleting that file
    and restarting is the way back in after losing every admin token.
    """
    token_file = data_dir / ADMIN_TOKEN_FILE
    admin = await store.first_admin()
    if admin is not None and token_file.exists():
        return None
    if admin is None:
        admin = await store.ensure_user(ADMIN_USER, admin=True)
    _, secret = await store.create_token(admin._mapping["id"], "admin")
    data_dir.mkdir(parents=True, exist_ok=True)
    _write_private(token_file, secret + "\n", exclusive=False)
    return secret


def write_client_config(api_url: str, token: str, home: Path | None = None) -> Path | None:
    """Write ``~/.mags/config.json`` for the CLI/SDK unless one exists; return its path if written."""
    config_dir = (home or Path.home()) / ".mags"
    config_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = config_dir / "config.json"
    text = json.dumps({"api_url": api_url, "api_token": token}, indent=2) + "\n"
    return path if _write_private(path, text, exclusive=True) else None
