"""restore(): recreate an upper directory exactly as a snapshot recorded it.

The tree is rebuilt in a hidden sibling temp dir and renamed into place at the end, so a
crash never leaves a half-restored ``dest_dir`` (a leftover ``.<name>.restore-*`` dir is
garbage; :func:`cleanup_leftovers` removes them).  Data is written pack by pack on a thread pool
(whole packs, or ranged reads when only a little of a pack is needed); every chunk is checked
against its blake3 hash.  Metadata goes on last, in the order the kernel needs: owner, then
mode (chown clears setuid), then xattrs (incl. ``trusted.overlay.*``), then times; directories
bottom-up so creating their children does not bump their mtime afterwards.

Hardlinks come back as real hardlinks: the first path of each group is written, the others are
linked to it.  Whiteouts come back as 0:0 character devices (needs CAP_MKNOD, i.e. root).

Not fsynced: the object store is the source of truth and a local upper is a cache of it; after
a host crash the agent should restore again rather than trust a local copy (``durable=True``
syncs the filesystem before the rename, for callers who want it).

``strip_privileges=True`` restores a snapshot someone else controls as plain data: setuid and
setgid bits are cleared and ``security.*`` xattrs (file capabilities, LSM labels) are not
set.  The agent uses it for base layers, which live on the host and are shared read-only by
forks; a workspace's own upper is always restored exactly.  ``check_space=True`` refuses
(:class:`NoSpace`, before writing anything) a snapshot that cannot fit on the target's
filesystem, so the caller can make room and try again.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import zstandard

from mags.errors import StorageError
from mags.storage.objectstore import ObjectStore
from mags.storage.sync import format as fmt
from mags.storage.sync import fsread
from mags.storage.sync.cache import LocalCache
from mags.storage.sync.killpoints import killpoint
from mags.storage.sync.packs import PackReader, TreeLoader, decode_blob
from mags.storage.sync.scan import Scanner, leaf_state
from mags.storage.sync.snapshot import SyncOptions, load_root, upper_key

_CRITICAL_XATTRS = ("trusted.", "user.")
_PRIVILEGE_XATTRS = "security."
_SETID = stat.S_ISUID | stat.S_ISGID
_BLOCK = 4096
_RANGE_GAP = 256 << 10
_EUID, _EGID = os.geteuid(), os.getegid()


class NoSpace(StorageError):
    """The target filesystem cannot hold the snapshot (``needed`` / ``free``: bytes)."""

    def __init__(self, message: str, needed: int, free: int) -> None:
        super().__init__(message)
        self.needed = needed
        self.free = free

    @property
    def details(self) -> dict[str, int]:
        return {"needed_bytes": self.needed, "free_bytes": self.free}


@dataclass
class RestoreResult:
    """What a restore did."""

    snapshot_id: str
    files: int
    bytes_total: int
    bytes_downloaded: int
    seconds: float
    reused: bool = False  # dest_dir already held exactly this snapshot
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


class _Target:
    """A regular file being written; ``single``: one chunk, so written and finished at once."""

    __slots__ = ("entry", "path", "single")

    def __init__(self, path: str, entry: fmt.Entry, single: bool) -> None:
        self.path = path
        self.entry = entry
        self.single = single


def apply_meta(
    target: str | int, entry: dict[str, Any], kind: str, warnings: list[str], strip: bool = False
) -> None:
    """Set owner, mode, xattrs and mtime of a path (never following symlinks) or an open fd.

    ``strip``: without setuid/setgid bits and ``security.*`` xattrs (see the module doc).
    """
    follow = isinstance(target, int)
    uid, gid = entry["u"], entry["g"]
    if (uid, gid) != (_EUID, _EGID):
        os.chown(target, uid, gid, follow_symlinks=follow)
    if kind != fsread.SYMLINK:
        # never a symlink here, so following is a no-op
        os.chmod(target, entry["m"] & ~_SETID if strip else entry["m"])
    for name, value in fmt.decode_xattrs(entry.get("x", {})).items():
        if strip and name.startswith(_PRIVILEGE_XATTRS):
            continue
        try:
            os.setxattr(target, name, value, follow_symlinks=follow)
        except OSError as exc:
            if name.startswith(_CRITICAL_XATTRS):
                raise StorageError(f"cannot set xattr {name} on {target}: {exc}") from exc
            warnings.append(f"xattr {name} not restored on {target}: {exc.strerror}")
    os.utime(target, ns=(entry["t"], entry["t"]), follow_symlinks=follow)


def _syncfs(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    finally:
        os.close(fd)


class _Restorer:
    """One run of :func:`restore`."""

    def __init__(
        self,
        store: ObjectStore,
        cache: LocalCache,
        root: dict[str, Any],
        opts: SyncOptions,
        strip: bool = False,
    ) -> None:
        self.strip = strip
        self.cache = cache
        self.root = root
        self.opts = opts
        self.reader = PackReader(store, opts.prefix, cache)
        self.trees = TreeLoader(self.reader, cache)
        self.warnings: list[str] = []
        self.dirs: list[tuple[str, fmt.Entry]] = []
        self.leaves: list[tuple[str, fmt.Entry]] = []
        self.tree_refs: dict[str, fmt.Ref] = {}
        self.local = threading.local()

    def walk(self, ref: fmt.Ref, rel: str) -> None:
        """Collect every entry below ``rel`` in manifest order (names sorted, depth first)."""
        self.tree_refs[rel] = ref
        last = None
        for e in self.trees.load(ref):
            name = e["n"]
            if not name or "/" in name or name in (".", "..") or (last is not None and name <= last):
                raise StorageError(f"snapshot has a bad or repeated file name {name!r} in {rel or '/'}")
            last = name
            crel = f"{rel}/{name}" if rel else name
            if e["k"] == fsread.DIR:
                self.dirs.append((crel, e))
                self.walk(e["r"], crel)
            else:
                self.leaves.append((crel, e))

    def check_space(self, parent: str) -> None:
        """Raise :class:`NoSpace` unless ``parent``'s filesystem can hold the whole tree.

        Each file counts whole 4 KiB blocks (hardlinks once), each directory one block, each
        entry one inode: a little pessimistic, never optimistic by more than ext4's extent
        blocks.
        """
        if not self.dirs and not self.leaves:
            self.walk(self.root["tree"], "")
        needed = _BLOCK * (len(self.dirs) + 1)
        seen: set[str] = set()
        for _, e in self.leaves:
            if e["k"] != fsread.FILE:
                continue
            h = e.get("h")
            if h is not None:
                if h in seen:
                    continue
                seen.add(h)
            needed += -(-e["s"] // _BLOCK) * _BLOCK
        st = os.statvfs(parent)
        free = st.f_bavail * st.f_frsize
        inodes = len(self.dirs) + len(self.leaves) + 1
        if needed > free or (st.f_files and inodes > st.f_favail):
            raise NoSpace(
                f"not enough space to restore the snapshot: {needed / 2**20:.0f} MiB and {inodes} "
                f"inodes needed, {free / 2**20:.0f} MiB and {st.f_favail} inodes free",
                needed,
                free,
            )

    def run(self, tmp: str) -> None:
        if not self.dirs and not self.leaves:
            self.walk(self.root["tree"], "")
        for rel, _ in self.dirs:
            os.mkdir(os.path.join(tmp, rel), 0o700)
        plan: dict[str, dict[int, tuple[fmt.Ref, list[tuple[_Target, int]]]]] = {}
        primaries: dict[str, str] = {}
        links: list[tuple[str, str]] = []
        late: list[_Target] = []
        for rel, e in self.leaves:
            path = os.path.join(tmp, rel)
            kind = e["k"]
            if kind == fsread.FILE:
                h = e.get("h")
                if h is not None:
                    first = primaries.setdefault(h, path)
                    if first != path:
                        links.append((first, path))
                        continue
                chunks = e.get("c", ())
                single = len(chunks) == 1 and chunks[0][0] == 0 and chunks[0][5] == e["s"]
                target = _Target(path, e, single)
                if not single:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                    try:
                        os.ftruncate(fd, e["s"])
                        if not chunks:
                            apply_meta(fd, e, kind, self.warnings, self.strip)
                    finally:
                        os.close(fd)
                    if chunks:
                        late.append(target)
                for c in chunks:
                    ref = c[1:]
                    slot = plan.setdefault(ref[1], {}).setdefault(ref[2], (ref, []))
                    slot[1].append((target, c[0]))
            else:
                self._make_special(path, e)
        with ThreadPoolExecutor(self.opts.restore_workers, thread_name_prefix="mags-restore") as pool:
            for fut in [pool.submit(self._restore_pack, pack_id, blobs) for pack_id, blobs in plan.items()]:
                fut.result()
        killpoint("restore_data_written")
        for target in late:
            fd = os.open(target.path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            try:
                apply_meta(fd, target.entry, fsread.FILE, self.warnings, self.strip)
            finally:
                os.close(fd)
        for first, path in links:
            os.link(first, path)
        for rel, e in reversed(self.dirs):
            apply_meta(os.path.join(tmp, rel), e, fsread.DIR, self.warnings, self.strip)
        apply_meta(tmp, self.root["meta"], fsread.DIR, self.warnings, self.strip)

    def _make_special(self, path: str, e: fmt.Entry) -> None:
        kind = e["k"]
        if kind == fsread.SYMLINK:
            os.symlink(e["L"], path)
        elif kind == fsread.FIFO:
            os.mkfifo(path, 0o600)
        elif kind == fsread.WHITEOUT:
            try:
                os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(0, 0))
            except PermissionError as exc:
                raise StorageError(f"cannot create whiteout {path}: needs CAP_MKNOD (root)") from exc
        else:
            raise StorageError(f"snapshot has an unknown entry kind {kind!r} at {path}")
        apply_meta(path, e, kind, self.warnings, self.strip)

    def _fetch(
        self, pack_id: str, blobs: dict[int, tuple[fmt.Ref, list[Any]]]
    ) -> list[tuple[fmt.Ref, memoryview]]:
        """The payloads of the wanted blobs of one pack (whole-pack GET unless little is needed)."""
        offsets = sorted(blobs)
        end = max(off + blobs[off][0][3] for off in offsets)
        needed = sum(blobs[off][0][3] for off in offsets)
        cached = self.cache.cached_pack(pack_id) if self.reader.store.remote else None
        if cached is not None or needed * 2 >= end:
            data = memoryview(cached if cached is not None else self.reader.get_pack(pack_id))
            return [(blobs[off][0], data[off : off + blobs[off][0][3]]) for off in offsets]
        out = []
        i = 0
        while i < len(offsets):  # coalesce nearby blobs into one ranged read
            start = offsets[i]
            stop = start + blobs[start][0][3]
            j = i + 1
            while j < len(offsets) and offsets[j] - stop < _RANGE_GAP:
                stop = max(stop, offsets[j] + blobs[offsets[j]][0][3])
                j += 1
            data = memoryview(self.reader.get_range(pack_id, start, stop - start))
            for off in offsets[i:j]:
                out.append((blobs[off][0], data[off - start : off - start + blobs[off][0][3]]))
            i = j
        return out

    def _restore_pack(self, pack_id: str, blobs: dict[int, tuple[fmt.Ref, list[Any]]]) -> None:
        dctx = getattr(self.local, "dctx", None)
        if dctx is None:
            dctx = self.local.dctx = zstandard.ZstdDecompressor()
        for ref, payload in self._fetch(pack_id, blobs):
            if self.opts.verify:
                data = decode_blob(ref, payload, dctx)
            else:
                data = (
                    bytes(payload) if ref[3] == ref[4] else dctx.decompress(payload, max_output_size=ref[4])
                )
            for target, offset in blobs[ref[2]][1]:
                self._write(target, offset, data)

    def _write(self, target: _Target, offset: int, data: bytes) -> None:
        if target.single:
            fd = os.open(target.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                apply_meta(fd, target.entry, fsread.FILE, self.warnings, self.strip)
            finally:
                os.close(fd)
            return
        fd = os.open(target.path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            done = 0
            while done < len(data):
                done += os.pwrite(fd, memoryview(data)[done:], offset + done)
        finally:
            os.close(fd)


def _record_state(dest: str, tree_refs: dict[str, fmt.Ref]) -> dict[str, list[Any]]:
    """The stat state of a freshly restored tree, once the clock has moved past its ctimes."""
    scanner = Scanner({})
    root = scanner.scan(dest, "", os.lstat(dest))
    newest = root.st.st_ctime_ns
    state: dict[str, list[Any]] = {}
    stack = [root]
    while stack:
        node = stack.pop()
        state[node.rel] = [node.st.st_ino, node.st.st_ctime_ns, tree_refs[node.rel]]
        newest = max(newest, node.st.st_ctime_ns)
        for kid in node.kids:
            if kid.node is not None:
                stack.append(kid.node)
            else:
                state[kid.rel] = leaf_state(kid.st, kid.h)
                newest = max(newest, kid.st.st_ctime_ns)
    # A change within the same clock tick as our last write could keep the same ctime: wait
    # for the tick to pass (nothing else touches dest before we return).
    while fsread.coarse_now_ns() <= newest:
        time.sleep(0.002)
    return state


def _matches(cache: LocalCache, dest: str, snapshot_id: str, root: dict[str, Any]) -> bool:
    state = cache.load_state(dest, snapshot_id)
    if not state:
        return False
    node = Scanner(state).scan(dest, "", os.lstat(dest))
    return node.clean and node.state_ref == root["tree"]


def _nonempty(path: str) -> bool:
    with os.scandir(path) as it:
        return any(True for _ in it)


def cleanup_leftovers(parent_dir: str | Path) -> int:
    """Remove temp dirs of restores that were killed; return how many were removed."""
    removed = 0
    if not os.path.isdir(parent_dir):
        return 0
    with os.scandir(parent_dir) as it:
        for entry in it:
            if (
                entry.name.startswith(".")
                and ".restore-" in entry.name
                and entry.is_dir(follow_symlinks=False)
            ):
                shutil.rmtree(entry.path, ignore_errors=True)
                removed += 1
    return removed


def restore(
    store: ObjectStore,
    snapshot_id: str,
    dest_dir: str | Path,
    cache_dir: str | Path,
    options: SyncOptions | None = None,
    *,
    replace: bool = False,
    durable: bool = False,
    strip_privileges: bool = False,
    check_space: bool = False,
) -> RestoreResult:
    """Recreate snapshot ``snapshot_id`` at ``dest_dir`` (absent or empty; or any, if ``replace``).

    If ``dest_dir`` already holds exactly this snapshot (per the host cache), nothing is done:
    callers keep stripped and exact restores in different places (the cache cannot tell them
    apart).
    """
    t0 = time.monotonic()
    opts = options or SyncOptions()
    dest = os.path.abspath(dest_dir)
    with LocalCache.shared(cache_dir) as cache:
        root = load_root(store, cache, opts.prefix, snapshot_id)
        result = RestoreResult(snapshot_id, root["files"], root["bytes"], 0, 0.0)
        if os.path.lexists(dest) and (os.path.islink(dest) or not os.path.isdir(dest)):
            raise StorageError(f"restore target {dest} is not a directory")
        nonempty = os.path.isdir(dest) and _nonempty(dest)
        if nonempty:
            key = upper_key(dest)
            if _matches(cache, key, snapshot_id, root):
                result.reused = True
                result.seconds = time.monotonic() - t0
                return result
            if not replace:
                raise StorageError(f"restore target {dest} is not empty")
        parent = os.path.dirname(dest)
        os.makedirs(parent, exist_ok=True)
        restorer = _Restorer(store, cache, root, opts, strip_privileges)
        if check_space:
            restorer.check_space(parent)
        tmp = os.path.join(parent, f".{os.path.basename(dest)}.restore-{os.urandom(4).hex()}")
        os.mkdir(tmp, 0o700)
        try:
            restorer.run(tmp)
            if durable:
                _syncfs(tmp)
            killpoint("restore_before_rename")
            _swap_into_place(tmp, dest, nonempty)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, OSError):
                raise StorageError(f"cannot restore snapshot {snapshot_id} to {dest}: {exc}") from exc
            raise
        killpoint("restore_renamed")
        key = upper_key(dest)
        cache.drop_states(key)
        cache.save_state(key, snapshot_id, _record_state(dest, restorer.tree_refs))
        if store.remote:
            cache.evict_packs()
        result.bytes_downloaded = restorer.reader.bytes_downloaded
        result.warnings = restorer.warnings
        result.seconds = time.monotonic() - t0
        return result


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: str, b: str) -> bool:
    """Atomically swap two paths (renameat2 RENAME_EXCHANGE); False if unsupported."""
    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "renameat2"):
        return False
    rc = libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc != 0:
        err = ctypes.get_errno()
        if err in (errno.EINVAL, errno.ENOSYS):
            return False
        raise OSError(err, os.strerror(err), b)
    return True


def _swap_into_place(tmp: str, dest: str, nonempty: bool) -> None:
    if not nonempty:
        try:
            os.rename(tmp, dest)  # replaces an empty dest dir atomically
            return
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    if _exchange(tmp, dest):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old tree
        return
    trash = f"{tmp}-old"
    os.rename(dest, trash)
    os.rename(tmp, dest)
    shutil.rmtree(trash, ignore_errors=True)
