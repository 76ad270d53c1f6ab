"""The object store interface: a flat, immutable-friendly key/value store (local dir or S3).

Keys are ``/``-separated paths of safe segments (``[A-Za-z0-9._-]``, never ``.`` or ``..``),
e.g. ``packs/ab/ab12...``; the same key means the same object on every backend.  Errors from a
backend are translated into :class:`~mags.errors.StorageError` (a missing object into its
subclass :class:`ObjectMissing`) where they enter our code.

Backends: :class:`mags.storage.local.LocalObjectStore` (the embedded default) and
:class:`mags.storage.s3.S3ObjectStore`; build one from settings with :func:`create_object_store`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from mags.errors import ConfigError, StorageError

if TYPE_CHECKING:
    from mags.config import Settings

_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")
MAX_KEY_LEN = 512


class ObjectMissing(StorageError):
    """The object asked for does not exist (a ``StorageError`` so callers may treat it as one)."""

    status_code = 404


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One listed object: its key, size in bytes and last-modified time (unix seconds)."""

    key: str
    size: int
    mtime: float


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe object key, else raise StorageError.

    Safe keys cannot climb out of a local store's root: no empty, ``.`` or ``..`` segments,
    no leading slash, only ``[A-Za-z0-9._-]`` characters.
    """
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LEN:
        raise StorageError(f"bad object key {key!r}")
    for seg in key.split("/"):
        if seg in (".", "..") or not _SEGMENT.match(seg):
            raise StorageError(f"bad object key {key!r}")
    return key


@runtime_checkable
class ObjectStore(Protocol):
    """A key/value object store; every method raises StorageError on failure."""

    #: False when reads are as cheap as local disk reads (no point caching downloads).
    remote: bool

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` atomically (readers see all of it or nothing)."""

    def put_file(self, key: str, path: str | Path) -> None:
        """Store a local file's content under ``key``, streamed (multipart for big files)."""

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Store ``data`` only if ``key`` does not exist; return True if this call stored it."""

    def get(self, key: str) -> bytes:
        """Return the whole object; raise ObjectMissing if there is none."""

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """Return ``length`` bytes from ``offset`` (fewer at the end of the object)."""

    def get_to_file(self, key: str, path: str | Path) -> None:
        """Download an object into a local file (written to a temp file, then renamed)."""

    def exists(self, key: str) -> bool:
        """True if the object exists."""

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield every object whose key starts with ``prefix`` (no order promised)."""

    def delete(self, key: str) -> None:
        """Delete one object; deleting a missing object is not an error."""

    def delete_many(self, keys: Iterable[str]) -> None:
        """Delete many objects (batched where the backend can)."""


def create_object_store(settings: Settings) -> ObjectStore:
    """Build the object store the settings ask for (local root: ``data_dir/objects``)."""
    if settings.object_store == "local":
        from mags.storage.local import LocalObjectStore

        return LocalObjectStore(settings.local_store_root)
    if settings.object_store == "s3":
        if not settings.s3_endpoint:
            raise ConfigError("object_store = 's3' needs s3_endpoint")
        from mags.storage.s3 import S3ObjectStore

        return S3ObjectStore(
            endpoint=settings.s3_endpoint,
            bucket=settings.s3_bucket,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
            region=settings.s3_region,
        )
    raise ConfigError(f"unknown object_store {settings.object_store!r}")
