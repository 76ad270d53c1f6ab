"""Garbage collection of snapshot data, repository deletion, and rebuilding the dedup index.

**Scope of dedup.**  One repository (a key prefix; ``""`` by default) holds the packs of every
workspace, so a fork, which starts from its base's snapshot, shares all of the base's data,
and two workspaces that install the same packages share chunks too.  Hence no per-workspace
delete: deleting a workspace drops its head from the live set, and the next :func:`gc` frees
whatever no live snapshot still references.  Tenants that must not share (dedup can reveal
that some content exists) get a repository prefix each, which :func:`delete_repository`
removes wholesale.

**Safety.**  Every snapshot root lists the exact set of packs it references, so reachability is
the union of the live roots' lists.  GC keeps:

* packs and roots reachable from ``live_snapshot_ids`` (every workspace head, plus any history
  the caller retains);
* every object younger than ``grace_seconds``, and everything reachable from a root younger
  than that — this protects a sync in flight (its objects are new) and a root written but not
  yet committed.

A sync may also point at chunks of *older* packs through the host's dedup index; it does so
only for packs younger than its ``reuse_window_s``, so ``grace_seconds`` must exceed
``reuse_window_s`` plus the longest sync-to-commit time (defaults: 6 h window, 24 h grace).
Roots are deleted before packs, so a crash mid-GC never leaves a root whose packs are gone.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mags.errors import StorageError
from mags.storage.objectstore import ObjectStore
from mags.storage.sync import format as fmt
from mags.storage.sync.cache import LocalCache
from mags.storage.sync.snapshot import load_root

DEFAULT_GRACE_S = 24 * 3600


@dataclass
class GcResult:
    """What a GC run found and removed."""

    live_snapshots: int
    snapshots_kept: int
    snapshots_deleted: int
    packs_kept: int
    packs_deleted: int
    bytes_freed: int
    seconds: float
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def gc(
    store: ObjectStore,
    live_snapshot_ids: set[str] | list[str],
    grace_seconds: float = DEFAULT_GRACE_S,
    *,
    prefix: str = "",
    cache_dir: str | Path | None = None,
    dry_run: bool = False,
) -> GcResult:
    """Delete snapshot roots and packs that no live or young snapshot reaches.

    Raises StorageError (deleting nothing) if a live snapshot cannot be read.
    """
    t0 = time.monotonic()
    cutoff = time.time() - grace_seconds
    cache = LocalCache(cache_dir) if cache_dir is not None else None
    try:
        snaps = {info.key.rsplit("/", 1)[-1]: info for info in store.list(f"{prefix}snapshots/")}
        packs = list(store.list(f"{prefix}packs/"))
        live = set(live_snapshot_ids)
        keep = live | {sid for sid, info in snaps.items() if info.mtime >= cutoff}
        reachable: set[str] = set()
        for sid in sorted(keep):
            try:
                root = load_root(store, cache, prefix, sid)
            except StorageError:
                if sid in live:
                    raise StorageError(f"gc aborted: live snapshot {sid} cannot be read") from None
                continue  # a young root deleted meanwhile by another GC: nothing to protect
            reachable.update(root["packs"])
        dead_snaps = [sid for sid, info in snaps.items() if sid not in keep and info.mtime < cutoff]
        dead_packs = [p for p in packs if fmt.pack_id_of_key(p.key) not in reachable and p.mtime < cutoff]
        if not dry_run:
            store.delete_many([fmt.snapshot_key(prefix, sid) for sid in dead_snaps])
            store.delete_many([p.key for p in dead_packs])
            if cache is not None:
                cache.forget_packs(fmt.pack_id_of_key(p.key) for p in dead_packs)
            cleanup = getattr(store, "cleanup_tmp", None)
            if cleanup is not None:
                cleanup(max(grace_seconds, 3600))
        return GcResult(
            live_snapshots=len(live),
            snapshots_kept=len(snaps) - len(dead_snaps),
            snapshots_deleted=len(dead_snaps),
            packs_kept=len(packs) - len(dead_packs),
            packs_deleted=len(dead_packs),
            bytes_freed=sum(p.size for p in dead_packs),
            seconds=time.monotonic() - t0,
            dry_run=dry_run,
        )
    finally:
        if cache is not None:
            cache.close()


def delete_repository(store: ObjectStore, prefix: str) -> int:
    """Delete every object under a repository prefix (a tenant purge); return the count."""
    if not prefix or not prefix.endswith("/"):
        raise StorageError("delete_repository needs a non-empty prefix ending in '/'")
    keys = [info.key for info in store.list(prefix)]
    store.delete_many(keys)
    return len(keys)


def rebuild_index(store: ObjectStore, cache_dir: str | Path, *, prefix: str = "") -> int:
    """Fill the host's dedup index from the packs' own tables of contents; return chunk count.

    Not needed for correctness: a sync learns its parent's chunks from the parent's manifests.
    This adds cross-workspace dedup on a fresh host, at one or two ranged GETs per pack.
    """
    rows: list[tuple[str, str, int, int, int, float]] = []
    with LocalCache(cache_dir) as cache:
        for info in store.list(f"{prefix}packs/"):
            pack_id = fmt.pack_id_of_key(info.key)
            tail = store.get_range(info.key, -fmt.TRAILER.size, fmt.TRAILER.size)
            toc_off, toc_len = fmt.parse_trailer(tail)
            toc = fmt.parse_toc(store.get_range(info.key, toc_off, toc_len))
            rows.extend((h, pack_id, off, clen, ulen, info.mtime) for h, off, clen, ulen in toc)
        cache.add_chunks(rows)
    return len(rows)
