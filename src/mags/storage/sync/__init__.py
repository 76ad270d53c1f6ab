"""Workspace sync: snapshot an overlay upper dir into an object store, restore it, collect garbage.

Modules: ``format`` (on-store formats), ``fsread`` (reading files, chunking), ``scan`` (what
changed), ``snapshot``, ``restore``, ``gc``, ``heads`` (CAS of workspace heads), ``packs``,
``cache`` (host-local cache), ``killpoints`` (crash injection for tests).
"""

from mags.storage.sync.gc import DEFAULT_GRACE_S, GcResult, delete_repository, gc, rebuild_index
from mags.storage.sync.heads import HeadStore, MemoryHeadStore, SQLiteHeadStore, commit
from mags.storage.sync.restore import RestoreResult, cleanup_leftovers, restore
from mags.storage.sync.snapshot import SnapshotResult, SyncOptions, forget_upper, snapshot

__all__ = [
    "DEFAULT_GRACE_S",
    "GcResult",
    "HeadStore",
    "MemoryHeadStore",
    "RestoreResult",
    "SQLiteHeadStore",
    "SnapshotResult",
    "SyncOptions",
    "cleanup_leftovers",
    "commit",
    "delete_repository",
    "forget_upper",
    "gc",
    "rebuild_index",
    "restore",
    "snapshot",
]
