"""Uploaded files: safe names, where their bytes live, and their rows (owned, expiring).

An upload is stored as ``<data_dir>/files/<file_id>`` (mode 0600) with a row holding its
owner, sanitized name, size, sha256 and ``expires_at`` (``created_at + file_retention_s``).
Jobs refer to files by id; the agent copies each one to ``/uploads/<name>`` and
``/root/<name>`` before the script starts, so a job's files must have distinct names (a job
naming two that sanitize alike is refused).  Expired files are deleted by the janitor.
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, and_, delete, insert, select
from sqlalchemy.engine import Row

from mags.core.db import Database
from mags.core.schema import files
from mags.errors import NotFound, ValidationError

MAX_NAME_BYTES = 200  # well under NAME_MAX (255) so the agent may add suffixes
DEFAULT_NAME = "file"
FILE_ID_RE = re.compile(r"file-[0-9a-f]{24}")
_DOTS = re.compile(r"\.{2,}")


def new_file_id() -> str:
    """A file's public id: ``file-`` + 24 random hex digits."""
    return "file-" + secrets.token_hex(12)


def sanitize_filename(raw: str | None) -> str:
    """A name that is safe as one path component inside the sandbox.

    Basename only (anything up to the last ``/`` or ``\\`` is dropped), no control characters
    (C0, DEL, C1, NUL) or line/paragraph separators, no ``..`` runs, no leading/trailing
    spaces; capped at :data:`MAX_NAME_BYTES` UTF-8 bytes keeping the extension; empty -> ``file``.
    """
    name = raw or ""
    name = re.split(r"[/\\]", name)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch) not in ("Cc", "Cf", "Zl", "Zp", "Cs"))
    name = _DOTS.sub(".", name).strip()
    if name in ("", "."):
        return DEFAULT_NAME
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        stem, dot, ext = name.rpartition(".")
        if not dot or not stem or len(ext.encode()) > 20:
            stem, ext = name, ""
        room = MAX_NAME_BYTES - len(ext.encode()) - (1 if ext else 0)
        stem = stem.encode("utf-8")[:room].decode("utf-8", "ignore").rstrip()
        name = f"{stem}.{ext}" if ext else stem
    return name or DEFAULT_NAME


def check_distinct_names(rows: Sequence[Row[Any]]) -> None:
    """Refuse a job whose uploads would land on the same ``/uploads/<name>``.

    Names are sanitized at upload (``a/data.csv`` and ``b/data.csv`` are both ``data.csv``);
    placing both would silently keep only the last one, so the job is refused with both ids
    and the name, before anything runs.
    """
    seen: dict[str, str] = {}
    for row in rows:
        m = row._mapping
        first = seen.setdefault(m["name"], m["id"])
        if first != m["id"]:
            raise ValidationError(
                f"uploaded files {first} and {m['id']} would both be placed at /uploads/{m['name']}: "
                "upload one of them under another file name"
            )


def file_path(files_dir: Path, file_id: str) -> Path:
    """Where an upload's bytes live (``file_id`` is checked: it becomes a path component)."""
    if not FILE_ID_RE.fullmatch(file_id):
        raise NotFound(f"file {file_id} not found")
    return files_dir / file_id


# ---------------------------------------------------------------------------- queries
def _insert(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(files).values(**values))


def owned_files(conn: Connection, user_id: int, file_ids: Sequence[str], now: float) -> list[Row[Any]]:
    rows = conn.execute(
        select(files).where(
            and_(files.c.user_id == user_id, files.c.id.in_(list(file_ids)), files.c.expires_at > now)
        )
    ).all()
    return list(rows)


def _expired(conn: Connection, now: float, limit: int) -> list[str]:
    stmt = select(files.c.id).where(files.c.expires_at <= now).order_by(files.c.expires_at).limit(limit)
    return [r[0] for r in conn.execute(stmt).all()]


def _delete(conn: Connection, file_ids: list[str]) -> None:
    conn.execute(delete(files).where(files.c.id.in_(file_ids)))


class FileStore:
    """Rows of uploaded files; every user-facing read is scoped to the caller."""

    def __init__(self, db: Database, clock: Callable[[], float], files_dir: Path, retention_s: float) -> None:
        self.db = db
        self.clock = clock
        self.dir = files_dir
        self.retention_s = retention_s

    def path(self, file_id: str) -> Path:
        return file_path(self.dir, file_id)

    async def add(self, user_id: int, file_id: str, name: str, size: int, sha256: str) -> dict[str, Any]:
        """Record a stored upload; returns its row values."""
        now = self.clock()
        values = {
            "id": file_id,
            "user_id": user_id,
            "name": name,
            "size": size,
            "sha256": sha256,
            "created_at": now,
            "expires_at": now + self.retention_s,
        }
        await self.db.write(_insert, values)
        return values

    async def owned(self, user_id: int, file_ids: Sequence[str]) -> list[Row[Any]]:
        """The rows of ``file_ids`` in the given order; NotFound for any not the caller's (or expired)."""
        wanted = list(dict.fromkeys(file_ids))
        if not wanted:
            return []
        rows = {r._mapping["id"]: r for r in await self.db.read(owned_files, user_id, wanted, self.clock())}
        for file_id in wanted:
            if file_id not in rows:
                raise NotFound(f"file {file_id} not found (uploads are kept for {self.retention_s:g} s)")
        ordered = [rows[f] for f in wanted]
        check_distinct_names(ordered)
        return ordered

    async def expired(self, limit: int = 500) -> list[str]:
        return await self.db.read_heavy(_expired, self.clock(), limit)

    async def forget(self, file_ids: list[str]) -> None:
        if file_ids:
            await self.db.write(_delete, file_ids)
