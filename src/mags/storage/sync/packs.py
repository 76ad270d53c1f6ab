"""Writing blobs into packs (uploaded in the background) and reading them back.

:class:`PackWriter` hands out a blob's ref at once (pack ids are random, so the location is
known before the pack is sealed) and uploads each sealed ~8 MiB pack from a thread pool, with
a bound on packs in flight so memory stays flat.  :class:`PackReader` fetches packs (host cache
first), decompresses and verifies blobs against their blake3 hash; :class:`TreeLoader` does the
same for directory manifests, caching every manifest of a fetched tree pack.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import zstandard

from mags.errors import StorageError
from mags.storage.objectstore import ObjectStore
from mags.storage.sync import format as fmt
from mags.storage.sync.cache import LocalCache
from mags.storage.sync.killpoints import killpoint

PACK_TARGET = 8 << 20


class Uploader:
    """Runs pack uploads on a thread pool, at most ``max_in_flight`` at once."""

    def __init__(self, store: ObjectStore, workers: int = 4, max_in_flight: int = 6) -> None:
        self.store = store
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mags-upload")
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._futures: list[Future[Any]] = []
        self._lock = threading.Lock()
        self.bytes_uploaded = 0
        self.objects_uploaded = 0

    def submit(self, key: str, data: bytes, after: Any = None) -> None:
        """Upload ``data`` to ``key`` in the background, then call ``after()`` if given."""
        self._slots.acquire()

        def run() -> None:
            try:
                self.store.put(key, data)
                with self._lock:
                    self.bytes_uploaded += len(data)
                    self.objects_uploaded += 1
                killpoint("pack_uploaded")
                if after is not None:
                    after()
            finally:
                self._slots.release()

        with self._lock:
            self._futures.append(self._pool.submit(run))

    def wait(self) -> None:
        """Block until every upload finished; raise the first failure."""
        with self._lock:
            futures, self._futures = self._futures, []
        first: BaseException | None = None
        for fut in futures:
            exc = fut.exception()
            if exc is not None and first is None:
                first = exc
        if first is not None:
            if isinstance(first, StorageError):
                raise first
            raise StorageError(f"upload failed: {first}") from first

    def close(self) -> None:
        """Stop the pool (after :meth:`wait`)."""
        self._pool.shutdown(wait=True, cancel_futures=True)


class PackWriter:
    """Accumulates blobs of one kind (data chunks or manifests) into packs."""

    def __init__(
        self,
        prefix: str,
        uploader: Uploader,
        cache: LocalCache | None = None,
        target_size: int = PACK_TARGET,
    ) -> None:
        self.prefix = prefix
        self.uploader = uploader
        self.cache = cache
        self.target_size = target_size
        self._lock = threading.Lock()
        self._id: str | None = None
        self._blobs: list[tuple[str, bytes, int]] = []
        self._size = 0
        self._done_lock = threading.Lock()
        #: (pack_id, toc, pack_time) of every pack uploaded so far
        self.uploaded: list[tuple[str, list[list[Any]], float]] = []
        self.pack_ids: set[str] = set()

    def add(self, digest: str, payload: bytes, ulen: int) -> fmt.Ref:
        """Add one (compressed or raw) blob; return its ref."""
        sealed = None
        with self._lock:
            if self._id is None:
                self._id = fmt.new_pack_id()
                self._size = len(fmt.PACK_MAGIC)
                self.pack_ids.add(self._id)
            ref: fmt.Ref = [digest, self._id, self._size, len(payload), ulen]
            self._blobs.append((digest, payload, ulen))
            self._size += len(payload)
            if self._size >= self.target_size:
                sealed = self._take()
        if sealed:
            self._upload(*sealed)
        return ref

    def _take(self) -> tuple[str, list[tuple[str, bytes, int]]]:
        assert self._id is not None
        sealed = (self._id, self._blobs)
        self._id, self._blobs, self._size = None, [], 0
        return sealed

    def flush(self) -> None:
        """Seal and upload the pack being filled, if any."""
        with self._lock:
            sealed = self._take() if self._id is not None else None
        if sealed:
            self._upload(*sealed)

    def _upload(self, pack_id: str, blobs: list[tuple[str, bytes, int]]) -> None:
        data, toc = fmt.build_pack(blobs)  # type: ignore[arg-type]
        cache = self.cache if self.cache is not None and self.uploader.store.remote else None

        def after() -> None:
            with self._done_lock:
                self.uploaded.append((pack_id, toc, time.time()))
            if cache is not None:
                cache.store_pack(pack_id, data)

        self.uploader.submit(fmt.pack_key(self.prefix, pack_id), data, after)


def decode_blob(ref: fmt.Ref, payload: bytes | memoryview, dctx: zstandard.ZstdDecompressor) -> bytes:
    """Decompress one blob and check it against its hash."""
    digest, _pack, _off, clen, ulen = ref
    if len(payload) != clen:
        raise StorageError(f"blob {digest[:16]} is truncated in pack {ref[1]}")
    try:
        data = bytes(payload) if clen == ulen else dctx.decompress(payload, max_output_size=ulen)
    except zstandard.ZstdError as exc:
        raise StorageError(f"blob {digest[:16]} in pack {ref[1]} is corrupt: {exc}") from exc
    if len(data) != ulen or fmt.hash_hex(data) != digest:
        raise StorageError(f"blob {digest[:16]} in pack {ref[1]} is corrupt (hash mismatch)")
    return data


class PackReader:
    """Fetches packs, from the host cache when it holds them."""

    def __init__(self, store: ObjectStore, prefix: str, cache: LocalCache | None) -> None:
        self.store = store
        self.prefix = prefix
        self.cache = cache
        self._lock = threading.Lock()
        self.bytes_downloaded = 0

    def get_pack(self, pack_id: str) -> bytes:
        """A whole pack's bytes."""
        if self.cache is not None:
            data = self.cache.cached_pack(pack_id)
            if data is not None:
                return data
        data = self.store.get(fmt.pack_key(self.prefix, pack_id))
        with self._lock:
            self.bytes_downloaded += len(data)
        if self.cache is not None and self.store.remote:
            self.cache.store_pack(pack_id, data)
        return data

    def get_range(self, pack_id: str, offset: int, length: int) -> bytes:
        """Part of a pack (cache first, else a ranged GET)."""
        if self.cache is not None and (self.cache.pack_dir / pack_id).exists():
            data = self.cache.cached_pack(pack_id)
            if data is not None:
                return data[offset : offset + length]
        data = self.store.get_range(fmt.pack_key(self.prefix, pack_id), offset, length)
        with self._lock:
            self.bytes_downloaded += len(data)
        return data


class TreeLoader:
    """Loads directory manifests by ref: this run's memory, then host cache, then the pack.

    A tree pack is fetched whole and every manifest in it decoded and verified once (siblings
    are needed next), kept in memory for this run and written to the host cache.
    """

    def __init__(self, reader: PackReader, cache: LocalCache | None, memory_bytes: int = 64 << 20) -> None:
        self.reader = reader
        self.cache = cache
        self._dctx = zstandard.ZstdDecompressor()
        self._mem: dict[str, bytes] = {}
        self._mem_bytes = 0
        self._memory_bytes = memory_bytes
        self._fetched: set[str] = set()
        self._lock = threading.Lock()

    def load(self, ref: fmt.Ref) -> list[fmt.Entry]:
        """The entries of the manifest ``ref`` points at."""
        return fmt.decode_tree(self.load_bytes(ref))

    def load_bytes(self, ref: fmt.Ref) -> bytes:
        """The verified JSON bytes of a manifest."""
        digest, pack_id, off, clen, _ulen = ref
        data = self._mem.get(digest)
        if data is not None:
            return data
        if self.cache is not None:
            data = self.cache.get_tree(digest)
            if data is not None:
                return data
        with self._lock:
            data = self._mem.get(digest)
            if data is not None:
                return data
            pack = self.reader.get_pack(pack_id)
            if pack_id not in self._fetched:
                self._fetched.add(pack_id)
                self._take_whole_pack(pack_id, pack)
            data = self._mem.get(digest)
        if data is None:  # not in the pack's table of contents, or memory was full
            data = decode_blob(ref, memoryview(pack)[off : off + clen], self._dctx)
        return data

    def _take_whole_pack(self, pack_id: str, pack: bytes) -> None:
        toc_off, toc_len = fmt.parse_trailer(pack[-fmt.TRAILER.size :])
        items = []
        view = memoryview(pack)
        for digest, off, clen, ulen in fmt.parse_toc(pack[toc_off : toc_off + toc_len]):
            data = decode_blob([digest, pack_id, off, clen, ulen], view[off : off + clen], self._dctx)
            items.append((digest, data))
            if self._mem_bytes + len(data) <= self._memory_bytes:
                self._mem[digest] = data
                self._mem_bytes += len(data)
        if self.cache is not None:
            self.cache.put_trees(items)
