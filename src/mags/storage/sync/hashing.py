"""Turning files into stored chunks, uploading only what the store does not already hold.

A chunk may be referenced instead of uploaded when it is (in this order):

1. known to this run: stored by it, or reachable from the parent snapshot (learnt from the
   parent's manifests as they are loaded) — the parent stays live until our snapshot is
   committed in its place, so GC cannot take these away;
2. in the host's dedup index, and its pack is in the parent's pack set; or the pack was
   written within ``reuse_window_s`` (GC's grace period is longer) and still exists.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import time
from typing import Any

import zstandard

from mags.storage.objectstore import ObjectStore
from mags.storage.sync import format as fmt
from mags.storage.sync import fsread
from mags.storage.sync.cache import LocalCache
from mags.storage.sync.packs import PackWriter

READ_RETRIES = 3
GONE = {errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.ENXIO}  # the path changed under us


class ChunkStore:
    """Dedups, compresses and packs chunks for one snapshot run (thread-safe)."""

    def __init__(
        self,
        store: ObjectStore,
        cache: LocalCache,
        prefix: str,
        packs: PackWriter,
        parent_packs: set[str],
        compression_level: int,
        reuse_window_s: float,
        rewrite: bool = False,
    ) -> None:
        self.store = store
        self.cache = cache
        self.prefix = prefix
        self.packs = packs
        self.parent_packs = parent_packs
        self.level = compression_level
        self.reuse_after = time.time() - reuse_window_s
        self.rewrite = rewrite  # compaction: reference nothing stored before this run
        self.known: dict[str, fmt.Ref] = {}  # chunks safe to reference (parent's, or this run's)
        self.lock = threading.Lock()
        self.alive_packs: dict[str, bool] = {}
        self.local = threading.local()
        self.files_hashed = 0
        self.chunks_new = 0

    def compressor(self) -> zstandard.ZstdCompressor:
        """This thread's zstd compressor (they are not thread-safe)."""
        c = getattr(self.local, "zc", None)
        if c is None:
            c = self.local.zc = zstandard.ZstdCompressor(level=self.level)
        return c

    def learn(self, entry: fmt.Entry) -> None:
        """Remember the chunks of a parent manifest entry as safe to reference."""
        if self.rewrite:
            return
        known = self.known
        for c in entry.get("c", ()):
            known.setdefault(c[1], c[1:])

    def lookup(self, digest: str) -> fmt.Ref | None:
        """A ref to an already stored copy of the chunk, if one may be used."""
        ref = self.known.get(digest)
        if ref is not None or self.rewrite:
            return ref
        hit = self.cache.lookup_chunk(digest)
        if hit is not None:
            pack, off, clen, ulen, ptime = hit
            if pack in self.parent_packs or (ptime > self.reuse_after and self._pack_alive(pack)):
                return [digest, pack, off, clen, ulen]
        return None

    def _pack_alive(self, pack_id: str) -> bool:
        """Does a pack known only from the host index still exist? (asked once per pack per run)"""
        alive = self.alive_packs.get(pack_id)
        if alive is None:
            alive = self.store.exists(fmt.pack_key(self.prefix, pack_id))
            self.alive_packs[pack_id] = alive
            if not alive:
                self.cache.forget_packs([pack_id])
        return alive

    def store_chunk(self, data: memoryview) -> fmt.Ref:
        """Ref of a chunk: an existing copy, or a new compressed blob in the current pack."""
        digest = fmt.hash_hex(data)
        ref = self.lookup(digest)
        if ref is not None:
            return ref
        comp = self.compressor().compress(data)
        payload = comp if len(comp) < len(data) else bytes(data)
        with self.lock:
            ref = self.known.get(digest)
            if ref is None:
                ref = self.packs.add(digest, payload, len(data))
                self.known[digest] = ref
                self.chunks_new += 1
        return ref

    def hash_file(self, path: str, name: str) -> tuple[fmt.Entry, os.stat_result] | None:
        """Read, chunk and store one regular file; return its entry and fstat (None if gone).

        The content is re-read (up to READ_RETRIES times) if the file changed while being
        read; the returned fstat is the one the entry describes.
        """
        try:
            fd = fsread.open_file(path)
        except OSError as exc:
            if exc.errno in GONE:
                return None  # deleted or replaced since the scan: the next sync sees it
            raise
        try:
            for attempt in range(READ_RETRIES):
                before = os.fstat(fd)
                if not stat.S_ISREG(before.st_mode):
                    return None
                chunks: list[list[Any]] = []
                try:
                    for off, data in fsread.iter_chunks(fd, before):
                        chunks.append([off, *self.store_chunk(data)])
                except fsread.FileChanged:
                    if attempt == READ_RETRIES - 1:
                        raise
                    continue
                xattrs = fsread.read_xattrs(fd)
                after = os.fstat(fd)
                if (after.st_ctime_ns, after.st_size, after.st_mtime_ns) == (
                    before.st_ctime_ns,
                    before.st_size,
                    before.st_mtime_ns,
                ):
                    break
            entry = fsread.base_entry(name, fsread.FILE, after)
            entry["s"] = after.st_size
            if chunks:
                entry["c"] = chunks
            if xattrs:
                entry["x"] = fmt.encode_xattrs(xattrs)
            with self.lock:
                self.files_hashed += 1
            return entry, after
        finally:
            os.close(fd)
