"""``python -m mags.storage.syncer``: run one sync operation as a subprocess, print one JSON line.

The host agent runs syncs out of process so a sync uses the other core and can be SIGKILLed
safely (every object is immutable; the head moves only by CAS).  Usage::

    python -m mags.storage.syncer [STORE FLAGS] snapshot --upper DIR [--parent ID] [--cache DIR]
                                                [--head-db FILE --workspace ID] [--rewrite]
    python -m mags.storage.syncer [STORE FLAGS] restore --snapshot ID --dest DIR [--cache DIR] [--replace]
                                                [--strip-privileges] [--check-space]
    python -m mags.storage.syncer [STORE FLAGS] gc (--live ID ... | --head-db FILE) [--grace SECONDS] [--dry-run]
    python -m mags.storage.syncer [STORE FLAGS] rebuild-index [--cache DIR]

Store flags default to the mags settings (``MAGS_OBJECT_STORE``, ``MAGS_S3_ENDPOINT``, ... and
``MAGS_DATA_DIR``): ``--store local|s3``, ``--local-root DIR``, ``--s3-endpoint URL``,
``--s3-bucket NAME``, ``--s3-region R``, ``--prefix P``.  Given ``--local-root`` (or ``--store s3
--s3-endpoint``) and ``--cache``, settings are not read at all (saves ~100 ms of imports).  S3 keys come only from the
environment (``MAGS_S3_ACCESS_KEY`` / ``MAGS_S3_SECRET_KEY``), never argv, which ``ps`` shows.

With ``--head-db`` (a :class:`SQLiteHeadStore`) ``snapshot`` reads the workspace head as the
parent and commits the new snapshot by compare-and-swap itself.

``restore --strip-privileges`` clears setuid/setgid bits and leaves out ``security.*`` xattrs
(base layers: a snapshot restored onto the host as data, never as programs to trust);
``--check-space`` fails with type ``NoSpace`` (and ``needed_bytes``, ``free_bytes``) before
writing anything when the target filesystem cannot hold the snapshot.

Output: ``{"ok": true, "op": ..., ...result}``, exit 0; or ``{"ok": false, "error": ...,
"type": ...}`` (plus the error's ``details``, if any) with exit 1 (3 for a lost
compare-and-swap).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from mags.errors import CommitConflict, MagsError
from mags.storage.objectstore import ObjectStore
from mags.storage.sync.killpoints import killpoint


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mags.storage.syncer", description="mags workspace syncer")
    p.add_argument("--store", choices=["local", "s3"], help="object store backend (default: settings)")
    p.add_argument("--local-root", type=Path, help="root dir of the local object store")
    p.add_argument("--s3-endpoint")
    p.add_argument("--s3-bucket")
    p.add_argument("--s3-region")
    p.add_argument("--prefix", default="", help="repository key prefix inside the store")
    p.add_argument("--cache", type=Path, help="host cache dir (default: <data_dir>/cache/sync)")
    p.add_argument("--workers", type=int, help="hash / restore worker threads")
    p.add_argument("--compression-level", type=int, default=3)
    sub = p.add_subparsers(dest="op", required=True)
    s = sub.add_parser("snapshot", help="snapshot an upper dir")
    s.add_argument("--upper", required=True, type=Path)
    s.add_argument("--parent")
    s.add_argument("--head-db", type=Path)
    s.add_argument("--workspace")
    s.add_argument("--rewrite", action="store_true", help="compaction: pack everything anew")
    r = sub.add_parser("restore", help="restore a snapshot into an empty dir")
    r.add_argument("--snapshot", required=True)
    r.add_argument("--dest", required=True, type=Path)
    r.add_argument("--replace", action="store_true", help="replace a non-empty dest atomically")
    r.add_argument("--durable", action="store_true", help="syncfs before the final rename")
    r.add_argument(
        "--strip-privileges", action="store_true", help="clear setuid/setgid bits, skip security.* xattrs"
    )
    r.add_argument("--check-space", action="store_true", help="fail early (NoSpace) if the target is too small")
    g = sub.add_parser("gc", help="delete data no live snapshot references")
    g.add_argument("--live", nargs="*", default=[])
    g.add_argument("--head-db", type=Path)
    g.add_argument("--grace", type=float)
    g.add_argument("--dry-run", action="store_true")
    sub.add_parser("rebuild-index", help="fill the host dedup index from the store")
    return p


def _settings() -> Any:
    from mags.config import load_settings  # pydantic: ~100 ms of imports, so only when needed

    return load_settings()


def _store(args: argparse.Namespace) -> ObjectStore:
    """The object store from flags; settings (env / config file) fill what flags leave out."""
    if args.local_root and args.store in (None, "local"):
        from mags.storage.local import LocalObjectStore

        return LocalObjectStore(args.local_root)
    if args.store == "s3" and args.s3_endpoint:
        from mags.storage.s3 import S3ObjectStore

        return S3ObjectStore(
            endpoint=args.s3_endpoint,
            bucket=args.s3_bucket or "mags",
            access_key=os.environ.get("MAGS_S3_ACCESS_KEY"),
            secret_key=os.environ.get("MAGS_S3_SECRET_KEY"),
            region=args.s3_region or os.environ.get("MAGS_S3_REGION") or "us-east-1",
        )
    from mags.storage.objectstore import create_object_store

    overrides: dict[str, Any] = {}
    for flag, field in (("store", "object_store"), ("s3_endpoint", "s3_endpoint"), ("s3_bucket", "s3_bucket"),
                        ("s3_region", "s3_region")):  # fmt: skip
        if getattr(args, flag):
            overrides[field] = getattr(args, flag)
    return create_object_store(_settings().model_copy(update=overrides))


def run(argv: list[str]) -> dict[str, Any]:
    """Parse ``argv``, run the operation, return the JSON-ready result."""
    from mags.storage.sync import (
        DEFAULT_GRACE_S,
        SQLiteHeadStore,
        SyncOptions,
        commit,
        gc,
        rebuild_index,
        restore,
        snapshot,
    )

    args = _parser().parse_args(argv)
    store = _store(args)
    cache = args.cache or _settings().data_dir / "cache" / "sync"
    opts = SyncOptions(prefix=args.prefix, compression_level=args.compression_level)
    if args.workers:
        opts.hash_workers = opts.restore_workers = args.workers
    if args.op == "snapshot":
        opts.rewrite = args.rewrite
        if args.head_db is None:
            result = snapshot(store, args.upper, args.parent, cache, opts).to_dict()
            return {"op": "snapshot", **result}
        if not args.workspace:
            raise MagsError("--head-db needs --workspace")
        heads = SQLiteHeadStore(args.head_db)
        parent, generation = heads.get_head(args.workspace)
        res = snapshot(store, args.upper, parent, cache, opts)
        if res.changed and res.snapshot_id is not None:
            killpoint("before_commit")
            generation = commit(heads, args.workspace, generation, res.snapshot_id)
            killpoint("after_commit")
        return {"op": "snapshot", **res.to_dict(), "generation": generation}
    if args.op == "restore":
        res = restore(
            store, args.snapshot, args.dest, cache, opts, replace=args.replace, durable=args.durable,
            strip_privileges=args.strip_privileges, check_space=args.check_space,
        )
        return {"op": "restore", **res.to_dict()}
    if args.op == "gc":
        live = set(args.live)
        if args.head_db is not None:
            live |= SQLiteHeadStore(args.head_db).live_snapshot_ids()
        grace = DEFAULT_GRACE_S if args.grace is None else args.grace
        res = gc(store, live, grace, prefix=args.prefix, cache_dir=cache, dry_run=args.dry_run)
        return {"op": "gc", **res.to_dict()}
    count = rebuild_index(store, cache, prefix=args.prefix)
    return {"op": "rebuild-index", "chunks": count}


def main(argv: list[str] | None = None) -> int:
    """Entry point: print one JSON line, return the exit code."""
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 5000))  # deep upper dirs
    try:
        out = {"ok": True, **run(sys.argv[1:] if argv is None else argv)}
        code = 0
    except CommitConflict as exc:
        out, code = {"ok": False, "error": str(exc), "type": type(exc).__name__}, 3
    except MagsError as exc:
        out, code = {"ok": False, "error": str(exc), "type": type(exc).__name__}, 1
        out.update(getattr(exc, "details", None) or {})
    except SystemExit as exc:  # argparse: usage already on stderr
        if not exc.code:
            return 0
        out, code = {"ok": False, "error": "bad arguments", "type": "UsageError"}, 2
    except Exception as exc:  # noqa: BLE001 - a bug: keep the one-JSON-line contract, traceback to stderr
        traceback.print_exc()
        out, code = {"ok": False, "error": repr(exc), "type": "InternalError"}, 1
    print(json.dumps(out), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
