"""A throwaway PostgreSQL server for tests (Debian's postgresql binaries), or a skip reason."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def pg_bin() -> Path | None:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            return candidate
    return None


def skip_reason() -> str | None:
    if pg_bin() is None:
        return "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root and runuser is missing (initdb refuses root)"
    return None


def _run(argv: list[str]) -> None:
    if os.geteuid() == 0:
        argv = ["runuser", "-u", "postgres", "--", *argv]
    subprocess.run(argv, check=True, capture_output=True, timeout=60)


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start PostgreSQL on a unix socket in a fresh /tmp dir; yield an asyncpg URL."""
    bindir = pg_bin()
    assert bindir is not None
    # not pytest's tmp_path: the postgres user cannot enter its 0700 parents
    base = Path(tempfile.mkdtemp(prefix="mags-pg-", dir="/tmp"))
    try:
        if os.geteuid() == 0:
            shutil.chown(base, "postgres", "postgres")
        data = base / "data"
        _run([str(bindir / "initdb"), "--no-sync", "-U", "postgres", "--auth=trust", "-E", "UTF8", "-D", str(data)])
        port = "5433"
        opts = f"-k {base} -p {port} -c listen_addresses='' -c fsync=off -c full_page_writes=off"
        _run([str(bindir / "pg_ctl"), "-w", "-D", str(data), "-o", opts, "-l", str(base / "log"), "start"])
        try:
            yield f"postgresql+asyncpg://postgres@/postgres?host={base}&port={port}"
        finally:
            _run([str(bindir / "pg_ctl"), "-w", "-D", str(data), "-m", "immediate", "stop"])
    finally:
        shutil.rmtree(base, ignore_errors=True)
