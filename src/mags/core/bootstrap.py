"""Start-up setup: a private data dir, the admin user, its token file, and the local client config.

Everything the server keeps (database, tokens, logs, uploads, workspaces, objects) is readable
by root only: the process runs with umask 077 from its first instruction, so every file it
creates is 0600 and every directory 0700, and :func:`secure_data_dir` tightens what an older
version left looser.  It does not walk the tree (millions of objects): the data dir's own
0700 is what stops other users, plus the known top-level files and the object store's root.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from mags.core.tokens import TokenStore

ADMIN_USER = "admin"
ADMIN_TOKEN_FILE = "admin.token"
PRIVATE_UMASK = 0o077
_SHARED_BITS = 0o077  # group and other permission bits


def use_private_umask() -> int:
    """From now on this process creates files 0600 and directories 0700; returns the old umask."""
    return os.umask(PRIVATE_UMASK)


def make_private(path: Path) -> bool:
    """Drop the group/other permission bits of ``path``; True if it changed.

    A missing path is fine.  A symlink is left alone (its target is not ours to judge).
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(st.st_mode) or not st.st_mode & _SHARED_BITS:
        return False
    os.chmod(path, stat.S_IMODE(st.st_mode) & ~_SHARED_BITS & ~(stat.S_ISUID | stat.S_ISGID))
    return True


def secure_data_dir(data_dir: Path, extra: Iterable[Path] = ()) -> list[Path]:
    """Create ``data_dir`` 0700, tighten it and its top-level entries (and ``extra``).

    ``extra``: other paths holding tenants' data outside ``data_dir`` (an object store root, a
    SQLite file elsewhere).  Returns the paths whose modes were changed.
    """
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    paths = [data_dir]
    with os.scandir(data_dir) as entries:
        paths += [Path(e.path) for e in entries]
    paths += list(extra)
    return [p for p in paths if make_private(p)]


def sqlite_files(db_url: str) -> list[Path]:
    """The files of a SQLite database URL (the database, its WAL and shared memory); else []."""
    if not db_url.startswith("sqlite") or ":///" not in db_url:
        return []
    path = db_url.split(":///", 1)[1].split("?", 1)[0]
    if not path or path == ":memory:":
        return []
    return [Path(path + suffix) for suffix in ("", "-wal", "-shm", "-journal")]


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
