"""``python -m mags.storage.syncer``: one JSON line per run, head commits by CAS, gc."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mags.storage import syncer
from mags.storage.sync import SQLiteHeadStore

from .helpers import assert_same_tree, build_basic_tree, write


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    code = syncer.main(list(argv))
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1, out
    return code, json.loads(out[0])


def test_snapshot_restore_gc_via_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    upper = tmp_path / "upper"
    build_basic_tree(upper)
    common = ["--local-root", str(tmp_path / "objects"), "--cache", str(tmp_path / "cache")]
    heads = ["--head-db", str(tmp_path / "heads.db"), "--workspace", "ws1"]
    code, res = run(capsys, *common, "snapshot", "--upper", str(upper), *heads)
    assert code == 0 and res["ok"] and res["changed"] and res["generation"] == 1
    sid = res["snapshot_id"]
    assert SQLiteHeadStore(tmp_path / "heads.db").get_head("ws1") == (sid, 1)

    code, res = run(capsys, *common, "snapshot", "--upper", str(upper), *heads)
    assert (res["changed"], res["snapshot_id"], res["generation"]) == (False, sid, 1)

    code, res = run(capsys, *common, "restore", "--snapshot", sid, "--dest", str(tmp_path / "r"))
    assert code == 0 and res["files"] > 0
    assert_same_tree(upper, tmp_path / "r")

    code, res = run(capsys, *common, "gc", "--head-db", str(tmp_path / "heads.db"), "--grace", "0")
    assert code == 0 and res["snapshots_deleted"] == 0 and res["live_snapshots"] == 1

    code, res = run(capsys, *common, "rebuild-index")
    assert code == 0 and res["chunks"] > 0


def test_plain_snapshot_with_parent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "u/f", "1")
    common = ["--local-root", str(tmp_path / "o"), "--cache", str(tmp_path / "c")]
    _, first = run(capsys, *common, "snapshot", "--upper", str(tmp_path / "u"))
    write(tmp_path / "u/f", "2")
    _, second = run(
        capsys, *common, "snapshot", "--upper", str(tmp_path / "u"), "--parent", first["snapshot_id"]
    )
    assert second["changed"] and second["snapshot_id"] != first["snapshot_id"]
    assert "generation" not in second


def test_errors_are_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--local-root", str(tmp_path / "o"), "--cache", str(tmp_path / "c")]
    code, res = run(capsys, *common, "restore", "--snapshot", "a" * 32, "--dest", str(tmp_path / "d"))
    assert code == 1 and not res["ok"] and res["type"] == "StorageError"
    code, res = run(capsys, *common, "snapshot", "--upper", str(tmp_path / "missing"))
    assert code == 1 and "does not exist" in res["error"]
    code, res = run(capsys, *common, "no-such-op")
    assert code == 2 and res["type"] == "UsageError"


def test_lost_cas_exits_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "u/f", "1")
    db = tmp_path / "heads.db"
    real_get = SQLiteHeadStore.get_head

    def stale_get(self: SQLiteHeadStore, ws: str) -> tuple[str | None, int]:
        head = real_get(self, ws)
        SQLiteHeadStore(db).compare_and_swap(ws, head[1], "someone-else")  # another writer wins
        return head

    monkeypatch.setattr(SQLiteHeadStore, "get_head", stale_get)
    common = ["--local-root", str(tmp_path / "o"), "--cache", str(tmp_path / "c")]
    code, res = run(
        capsys, *common, "snapshot", "--upper", str(tmp_path / "u"), "--head-db", str(db), "--workspace", "w"
    )
    assert code == 3 and res["type"] == "CommitConflict"


def test_real_subprocess(tmp_path: Path) -> None:
    write(tmp_path / "u/f", "1")
    proc = subprocess.run(
        [sys.executable, "-m", "mags.storage.syncer", "--local-root", str(tmp_path / "o"),
         "--cache", str(tmp_path / "c"), "snapshot", "--upper", str(tmp_path / "u")],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["changed"] is True
