"""On-store formats of workspace snapshots: packs, tree manifests, snapshot roots, object keys.

All objects are immutable once written::

    <prefix>packs/<id[:2]>/<id>   pack: zstd-compressed blobs (file chunks, or tree manifests)
    <prefix>snapshots/<id>        snapshot root: JSON, names the root tree and every pack used

A **pack** is ``MAGIC`` + blobs + a table of contents (zstd JSON ``[[hash, offset, clen, ulen],
...]``) + a 24-byte trailer ``<toc offset, toc length, TOC_MAGIC>``, so the dedup index can be
rebuilt from the store by reading trailers alone.  Pack ids are random (128 bits): a blob's
location is known the moment it is added, before the pack is sealed.  A blob is stored raw when
zstd does not make it smaller (then ``clen == ulen``).

A **ref** locates one blob: ``[hash, pack, offset, clen, ulen]`` (hash = blake3 hex of the
uncompressed blob).  A file's chunk list is ``[[file_offset, hash, pack, offset, clen, ulen],
...]`` (holes of sparse files are simply absent).

A **tree manifest** is one directory: JSON ``{"v": 1, "e": [entry, ...]}``, entries sorted by
the raw bytes of their names, each a dict with short keys::

    n name (str, surrogateescape)   k kind: f file, d dir, l symlink, w whiteout, p fifo
    m mode bits (& 0o7777)          u uid   g gid   t mtime_ns   x {xattr: base64 value}
    s size, c chunks, h hardlink key (files)       L target (symlinks)
    r tree ref, P sorted pack ids of the whole subtree, its own tree pack included (dirs)

Its hash is blake3 of the exact JSON bytes, so an unchanged subtree keeps its hash and costs
nothing.  The **snapshot root** JSON holds the root tree ref, the upper dir's own metadata, the
parent snapshot id, counters and ``packs``: the exact set of packs reachable from it (which
makes GC and restore prefetching a read of one small object).  A snapshot id is the first 128
bits of the blake3 hash of the root object's bytes.
"""

from __future__ import annotations

import base64
import json
import os
import struct
from typing import Any

import blake3
import zstandard

from mags.errors import StorageError

FORMAT_VERSION = 1
PACK_MAGIC = b"MAGSPK01"
TOC_MAGIC = b"MAGSTOC1"
TRAILER = struct.Struct("<QQ8s")

Entry = dict[str, Any]
Ref = list[Any]  # [hash, pack, offset, clen, ulen]


def new_pack_id() -> str:
    """A fresh random pack id (32 hex chars)."""
    return os.urandom(16).hex()


def pack_key(prefix: str, pack_id: str) -> str:
    """Object key of a pack."""
    return f"{prefix}packs/{pack_id[:2]}/{pack_id}"


def snapshot_key(prefix: str, snapshot_id: str) -> str:
    """Object key of a snapshot root."""
    return f"{prefix}snapshots/{snapshot_id}"


def pack_id_of_key(key: str) -> str:
    """The pack id at the end of a pack key."""
    return key.rsplit("/", 1)[-1]


def check_id(value: str, what: str) -> str:
    """Return ``value`` if it looks like one of our hex ids, else raise StorageError."""
    if (
        not isinstance(value, str)
        or not 8 <= len(value) <= 64
        or not all(c in "0123456789abcdef" for c in value)
    ):
        raise StorageError(f"bad {what} id {value!r}")
    return value


def hash_hex(data: bytes | memoryview) -> str:
    """blake3 hex digest of a blob."""
    return blake3.blake3(data).hexdigest()


def dumps(obj: Any) -> bytes:
    """Canonical compact JSON (the bytes that get hashed): sorted keys, ASCII only."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True, sort_keys=True).encode()


def loads(data: bytes | str) -> Any:
    """Parse JSON written by :func:`dumps`."""
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StorageError(f"corrupt manifest: {exc}") from exc


def encode_tree(entries: list[Entry]) -> bytes:
    """Serialize one directory manifest."""
    return dumps({"v": FORMAT_VERSION, "e": entries})


def decode_tree(data: bytes) -> list[Entry]:
    """Parse one directory manifest."""
    obj = loads(data)
    if not isinstance(obj, dict) or obj.get("v") != FORMAT_VERSION:
        raise StorageError("unsupported tree manifest version")
    entries: list[Entry] = obj["e"]
    return entries


def encode_xattrs(items: dict[str, bytes]) -> dict[str, str]:
    """Xattr values as base64 text, for JSON."""
    return {k: base64.b64encode(v).decode() for k, v in sorted(items.items())}


def decode_xattrs(items: dict[str, str]) -> dict[str, bytes]:
    """Inverse of :func:`encode_xattrs`."""
    return {k: base64.b64decode(v) for k, v in items.items()}


def build_pack(blobs: list[tuple[str, bytes | memoryview, int]]) -> tuple[bytes, list[list[Any]]]:
    """Lay out a pack from ``(hash, payload, ulen)`` blobs; return (pack bytes, toc)."""
    parts: list[bytes | memoryview] = [PACK_MAGIC]
    toc: list[list[Any]] = []
    offset = len(PACK_MAGIC)
    for digest, payload, ulen in blobs:
        toc.append([digest, offset, len(payload), ulen])
        parts.append(payload)
        offset += len(payload)
    toc_bytes = zstandard.ZstdCompressor(level=3).compress(dumps(toc))
    parts.append(toc_bytes)
    parts.append(TRAILER.pack(offset, len(toc_bytes), TOC_MAGIC))
    return b"".join(parts), toc


def parse_trailer(tail: bytes) -> tuple[int, int]:
    """Return (toc offset, toc length) from a pack's last 24 bytes."""
    if len(tail) != TRAILER.size:
        raise StorageError("pack too short")
    toc_off, toc_len, magic = TRAILER.unpack(tail)
    if magic != TOC_MAGIC:
        raise StorageError("bad pack trailer")
    return toc_off, toc_len


def parse_toc(data: bytes) -> list[list[Any]]:
    """Decode a pack's table of contents: ``[[hash, offset, clen, ulen], ...]``."""
    try:
        toc: list[list[Any]] = loads(zstandard.ZstdDecompressor().decompress(data))
    except zstandard.ZstdError as exc:
        raise StorageError(f"corrupt pack index: {exc}") from exc
    return toc


def encode_root(root: dict[str, Any]) -> tuple[str, bytes]:
    """Serialize a snapshot root; return (snapshot id, bytes)."""
    data = dumps(root)
    return hash_hex(data)[:32], data


def decode_root(snapshot_id: str, data: bytes) -> dict[str, Any]:
    """Parse and verify a snapshot root object."""
    if hash_hex(data)[:32] != snapshot_id:
        raise StorageError(f"snapshot {snapshot_id} is corrupt (hash mismatch)")
    root: dict[str, Any] = loads(data)
    if root.get("v") != FORMAT_VERSION:
        raise StorageError(f"snapshot {snapshot_id} has unsupported version {root.get('v')}")
    return root
