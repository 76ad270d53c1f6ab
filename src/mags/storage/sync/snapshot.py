"""snapshot(): store an overlay upper directory as an immutable snapshot.

1. **Scan** (cheap, always whole): ``lstat`` every path.  A path whose ``(inode, ctime, size,
   mtime)`` equals the host's recorded state for the parent snapshot is *trusted*: nothing
   about it changed, so its manifest entry is reused without reading it (ctime moves on any
   content, mode, owner, xattr or link-count change).  A directory is *clean* when it and everything below it is
   trusted; a clean subtree is reused by its manifest ref without even loading it.
2. **Hash** the untrusted files on a thread pool: FastCDC chunks, blake3, and only chunks not
   already stored are zstd-compressed into packs, which upload in the background.
3. **Build** manifests bottom-up for dirty directories; one whose JSON is unchanged keeps its
   old ref.  If the root tree and root metadata equal the parent's, nothing is committed.
4. Wait for every pack, then write the snapshot root (the last object, naming everything), and
   only then update the host cache.  The caller commits the returned id with a CAS.

Which stored chunks may be referenced rather than uploaded (safe from GC): see ``hashing``.
"""

from __future__ import annotations

import os
import socket
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mags.errors import StorageError
from mags.storage.objectstore import ObjectMissing, ObjectStore
from mags.storage.sync import format as fmt
from mags.storage.sync import fsread
from mags.storage.sync.cache import LocalCache
from mags.storage.sync.hashing import GONE, ChunkStore
from mags.storage.sync.killpoints import killpoint
from mags.storage.sync.packs import PackReader, PackWriter, TreeLoader, Uploader
from mags.storage.sync.scan import Kid, Node, Scanner, TooDeep, leaf_state


@dataclass
class SyncOptions:
    """Tuning knobs of snapshot/restore (defaults suit a 2-core host)."""

    prefix: str = ""  # key prefix of the repository inside the store ("" = one shared repo)
    compression_level: int = 3
    hash_workers: int = 2
    upload_workers: int = 4
    pack_size: int = 8 << 20
    reuse_window_s: float = 6 * 3600  # must stay well below gc's grace period
    restore_workers: int = 4  # file writes are kernel-bound: more than the cores helps
    verify: bool = True  # restore: check each chunk's blake3
    rewrite: bool = False  # compaction: write every blob anew into full packs (see compaction_advised)


@dataclass
class SnapshotResult:
    """What a snapshot did."""

    snapshot_id: str | None
    changed: bool
    bytes_uploaded: int
    files: int
    bytes_total: int
    seconds: float
    objects_uploaded: int = 0
    files_hashed: int = 0
    chunks_new: int = 0
    packs: int = 0  # packs the snapshot references
    compaction_advised: bool = False  # many small packs: the next sync should use rewrite=True
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def _fragmented(packs: int, nbytes: int, pack_size: int) -> bool:
    """Does a snapshot reference far more packs than its size needs?

    Every incremental sync adds one or two small packs, which the head keeps referencing while
    any blob in them is live; restores then pay one request per pack.  A ``rewrite`` sync packs
    everything anew (it costs about a full sync) and lets GC free the old packs.
    """
    return packs > 64 and packs > 4 * (nbytes // pack_size) + 32


def _distrust(node: Node) -> None:
    node.clean = node.trusted = False
    for kid in node.kids:
        kid.trusted = False
        if kid.node is not None:
            _distrust(kid.node)


def upper_key(upper_dir: str | Path) -> str:
    """The key of an upper dir in the host cache (its real path)."""
    return os.path.realpath(upper_dir)


def load_root(store: ObjectStore, cache: LocalCache | None, prefix: str, snapshot_id: str) -> dict[str, Any]:
    """Fetch (or take from the cache) and verify a snapshot root."""
    fmt.check_id(snapshot_id, "snapshot")
    data = cache.get_root(snapshot_id) if cache is not None else None
    if data is None:
        try:
            data = store.get(fmt.snapshot_key(prefix, snapshot_id))
        except ObjectMissing as exc:
            raise StorageError(f"snapshot {snapshot_id} does not exist") from exc
        root = fmt.decode_root(snapshot_id, data)
        if cache is not None:
            cache.put_root(snapshot_id, data)
        return root
    return fmt.decode_root(snapshot_id, data)


class _Snapshotter:
    """One run of :func:`snapshot` (holds the per-run state)."""

    def __init__(
        self, store: ObjectStore, cache: LocalCache, upper: str, parent_id: str | None, opts: SyncOptions
    ) -> None:
        self.store = store
        self.cache = cache
        self.upper = upper
        self.parent_id = parent_id
        self.opts = opts
        self.prefix = opts.prefix
        self.warnings: list[str] = []
        self.t_start = fsread.coarse_now_ns()
        self.reader = PackReader(store, self.prefix, cache)
        self.trees = TreeLoader(self.reader, cache)
        self.uploader = Uploader(store, workers=opts.upload_workers)
        self.data_packs = PackWriter(self.prefix, self.uploader, cache, opts.pack_size)
        self.tree_packs = PackWriter(self.prefix, self.uploader, cache, opts.pack_size)
        self.parent: dict[str, Any] | None = None
        self.parent_packs: set[str] = set()
        self.chunks = ChunkStore(
            store,
            cache,
            self.prefix,
            self.data_packs,
            self.parent_packs,
            opts.compression_level,
            opts.reuse_window_s,
            rewrite=opts.rewrite,
        )
        self.state: dict[str, list[Any]] = {}
        self.new_state: dict[str, list[Any]] = {}
        self.new_trees: list[tuple[str, bytes]] = []

    # ------------------------------------------------------------------ build
    def preload(self, node: Node, prev_ref: fmt.Ref | None) -> None:
        """Load the parent's manifests of dirty directories; learn their chunks (before hashing)."""
        if node.clean:
            return
        node.prev_ref = prev_ref
        node.prev = self._load_prev(prev_ref)
        for kid in node.kids:
            if kid.node is not None:
                prev = node.prev.get(kid.name)
                self.preload(kid.node, prev["r"] if prev is not None and prev["k"] == fsread.DIR else None)

    def _load_prev(self, prev_ref: fmt.Ref | None) -> dict[str, fmt.Entry]:
        prev: dict[str, fmt.Entry] = {}
        if prev_ref is None:
            return prev
        for e in self.trees.load(prev_ref):
            prev[e["n"]] = e
            self.chunks.learn(e)
        return prev

    def submit_hashing(self, node: Node, pool: ThreadPoolExecutor) -> None:
        """Queue every untrusted regular file under dirty directories."""
        if node.clean:
            return
        for kid in node.kids:
            if kid.node is not None:
                self.submit_hashing(kid.node, pool)
            elif kid.kind == fsread.FILE and not kid.trusted:
                kid.job = pool.submit(self.chunks.hash_file, os.path.join(node.path, kid.name), kid.name)

    def _record(self, rel: str, st: os.stat_result, record: list[Any]) -> None:
        if st.st_ctime_ns < self.t_start:  # else it may change again within this clock tick
            self.new_state[rel] = record

    def carry_state(self, node: Node) -> None:
        """Copy the recorded state of a clean subtree."""
        self.new_state[node.rel] = self.state[node.rel]
        for kid in node.kids:
            if kid.node is not None:
                self.carry_state(kid.node)
            else:
                self.new_state[kid.rel] = self.state[kid.rel]

    def build(self, node: Node, prev_ref: fmt.Ref | None) -> tuple[fmt.Ref, set[str], int, int]:
        """Manifest of a dirty directory: (ref, packs of the subtree, files, bytes)."""
        prev_entries = node.prev if node.prev is not None and node.prev_ref == prev_ref else None
        if prev_entries is None:
            prev_entries = self._load_prev(prev_ref)
        entries: list[fmt.Entry] = []
        packs: set[str] = set()
        files = nbytes = 0
        for kid in node.kids:
            prev = prev_entries.get(kid.name)
            if prev is not None and prev["k"] != kid.kind:
                prev = None
            if kid.node is not None:
                entry = self._dir_entry(kid, prev)
                if entry is None:
                    continue
                packs.update(entry["P"])
                files += entry["F"]
                nbytes += entry["B"]
            else:
                entry = self._leaf_entry(node, kid, prev)
                if entry is None:
                    continue
                if kid.kind == fsread.FILE:
                    files += 1
                    nbytes += entry["s"]
                    for c in entry.get("c", ()):
                        packs.add(c[2])
            entries.append(entry)
        data = fmt.encode_tree(entries)
        digest = fmt.hash_hex(data)
        if prev_ref is not None and prev_ref[0] == digest and not self.opts.rewrite:
            ref = prev_ref
        else:
            comp = self.chunks.compressor().compress(data)
            ref = self.tree_packs.add(digest, comp, len(data))
            self.new_trees.append((digest, data))
        packs.add(ref[1])
        self._record(node.rel, node.st, [node.st.st_ino, node.st.st_ctime_ns, ref])
        return ref, packs, files, nbytes

    def _dir_entry(self, kid: Kid, prev: fmt.Entry | None) -> fmt.Entry | None:
        sub = kid.node
        assert sub is not None
        if sub.clean and prev is not None and prev["r"] == sub.state_ref:
            self.carry_state(sub)
            return prev
        if sub.clean:  # state and parent disagree (should not happen): trust nothing below
            _distrust(sub)
        ref, packs, files, nbytes = self.build(sub, prev["r"] if prev is not None else None)
        if sub.trusted and prev is not None:
            entry = {k: v for k, v in prev.items() if k not in ("r", "P", "F", "B")}
        else:
            try:
                entry = fsread.meta_entry(sub.path, kid.name, fsread.DIR, sub.st)
            except OSError as exc:
                if exc.errno in GONE:
                    return None
                raise
        entry.update(r=ref, P=sorted(packs), F=files, B=nbytes)
        return entry

    def _leaf_entry(self, node: Node, kid: Kid, prev: fmt.Entry | None) -> fmt.Entry | None:
        path = os.path.join(node.path, kid.name)
        if kid.trusted and prev is not None:
            entry, st = prev, kid.st
        else:
            if kid.kind == fsread.FILE:
                got = kid.job.result() if kid.job is not None else self.chunks.hash_file(path, kid.name)
            else:
                try:
                    got = fsread.meta_entry(path, kid.name, kid.kind, kid.st), kid.st
                except OSError as exc:
                    if exc.errno not in GONE:
                        raise
                    got = None
            if got is None:
                return None  # vanished since the scan
            entry, st = got
        if kid.kind == fsread.FILE:
            if kid.h is not None and entry.get("h") != kid.h:
                entry = {**entry, "h": kid.h}
            elif kid.h is None and "h" in entry:
                entry = {k: v for k, v in entry.items() if k != "h"}
        self._record(kid.rel, st, leaf_state(st, kid.h))
        return entry

    # ------------------------------------------------------------------ run
    def run(self) -> SnapshotResult:
        t0 = time.monotonic()
        prev_ref: fmt.Ref | None = None
        if self.parent_id is not None:
            self.parent = load_root(self.store, self.cache, self.prefix, self.parent_id)
            self.parent_packs.update(self.parent["packs"])
            prev_ref = self.parent["tree"]
            if not self.opts.rewrite:
                self.state = self.cache.load_state(self.upper, self.parent_id) or {}
        try:
            root_st = os.lstat(self.upper)
        except FileNotFoundError as exc:
            raise StorageError(f"upper dir {self.upper} does not exist") from exc
        if not stat.S_ISDIR(root_st.st_mode):
            raise StorageError(f"upper dir {self.upper} is not a directory")
        scanner = Scanner(self.state)
        try:
            root = scanner.scan(self.upper, "", root_st)
        except TooDeep as exc:
            raise StorageError(f"{self.upper} nests directories too deep (at {exc})") from exc
        except OSError as exc:
            raise StorageError(f"cannot scan {self.upper}: {exc}") from exc
        self.warnings = scanner.warnings
        killpoint("scanned")
        if root.clean and self.parent is not None and root.state_ref == prev_ref:
            return self._unchanged(t0)
        root_meta = fsread.meta_entry(self.upper, "", fsread.DIR, root_st)
        del root_meta["n"], root_meta["k"]
        try:
            self.preload(root, prev_ref)
            with ThreadPoolExecutor(self.opts.hash_workers, thread_name_prefix="mags-hash") as pool:
                self.submit_hashing(root, pool)
                ref, packs, files, nbytes = self.build(root, prev_ref)
            if self.parent is not None and ref == prev_ref and root_meta == self.parent["meta"]:
                self.uploader.wait()
                self._save_state(self.parent_id)  # type: ignore[arg-type]
                return self._unchanged(t0)
            self.data_packs.flush()
            self.tree_packs.flush()
            self.uploader.wait()
            killpoint("packs_uploaded")
            root_obj = {
                "v": fmt.FORMAT_VERSION,
                "tree": ref,
                "meta": root_meta,
                "parent": self.parent_id,
                "created": time.time(),
                "host": socket.gethostname(),
                "files": files,
                "bytes": nbytes,
                "packs": sorted(packs),
            }
            snapshot_id, data = fmt.encode_root(root_obj)
            self.store.put(fmt.snapshot_key(self.prefix, snapshot_id), data)
            killpoint("root_written")
        except fsread.FileChanged as exc:
            raise StorageError(f"files under {self.upper} kept changing while being read") from exc
        except OSError as exc:
            raise StorageError(f"cannot read {self.upper}: {exc}") from exc
        finally:
            self.uploader.close()
        self._update_cache(snapshot_id, data)
        return SnapshotResult(
            snapshot_id=snapshot_id,
            changed=True,
            bytes_uploaded=self.uploader.bytes_uploaded + len(data),
            files=files,
            bytes_total=nbytes,
            seconds=time.monotonic() - t0,
            objects_uploaded=self.uploader.objects_uploaded + 1,
            files_hashed=self.chunks.files_hashed,
            chunks_new=self.chunks.chunks_new,
            packs=len(packs),
            compaction_advised=_fragmented(len(packs), nbytes, self.opts.pack_size),
            warnings=self.warnings,
        )

    def _unchanged(self, t0: float) -> SnapshotResult:
        assert self.parent is not None
        self.uploader.close()
        return SnapshotResult(
            snapshot_id=self.parent_id,
            changed=False,
            bytes_uploaded=self.uploader.bytes_uploaded,
            files=self.parent["files"],
            bytes_total=self.parent["bytes"],
            seconds=time.monotonic() - t0,
            files_hashed=self.chunks.files_hashed,
            packs=len(self.parent["packs"]),
            compaction_advised=_fragmented(
                len(self.parent["packs"]), self.parent["bytes"], self.opts.pack_size
            ),
            warnings=self.warnings,
        )

    def _update_cache(self, snapshot_id: str, root_data: bytes) -> None:
        rows = []
        for writer in (self.data_packs, self.tree_packs):
            for pack_id, toc, ptime in writer.uploaded:
                rows.extend((h, pack_id, off, clen, ulen, ptime) for h, off, clen, ulen in toc)
        self.cache.add_chunks(rows)
        self.cache.put_trees(self.new_trees)
        self.cache.put_root(snapshot_id, root_data)
        self._save_state(snapshot_id)
        killpoint("cache_updated")
        if self.store.remote:
            self.cache.evict_packs()

    def _save_state(self, snapshot_id: str) -> None:
        if snapshot_id != self.parent_id or self.new_state != self.state:
            keep = self.parent_id if snapshot_id != self.parent_id else None
            self.cache.save_state(self.upper, snapshot_id, self.new_state, keep=keep)


def forget_upper(cache_dir: str | Path, upper_dir: str | Path) -> None:
    """Drop the host cache's state for an upper dir that was deleted (or is about to be)."""
    with LocalCache.shared(cache_dir) as cache:
        cache.drop_states(upper_key(upper_dir))


def snapshot(
    store: ObjectStore,
    upper_dir: str | Path,
    parent_snapshot_id: str | None,
    cache_dir: str | Path,
    options: SyncOptions | None = None,
) -> SnapshotResult:
    """Snapshot ``upper_dir`` into ``store``; return the new id (or the parent's if unchanged).

    ``parent_snapshot_id`` must be the workspace's current head (or None for the first sync).
    The result is not yet a head: commit ``snapshot_id`` with ``HeadStore.compare_and_swap``.
    """
    opts = options or SyncOptions()
    with LocalCache.shared(cache_dir) as cache:
        return _Snapshotter(store, cache, upper_key(upper_dir), parent_snapshot_id, opts).run()
