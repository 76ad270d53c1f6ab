"""Persistent workspaces on a real S3 server (SeaweedFS): synced, restored on another host, deleted."""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import pytest

from mags import Mags
from tests.integration.conftest import SeaweedFS
from tests.integration.server_fixture import ServerProc, free_port

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (sandboxes)")


def s3_env(s3: SeaweedFS, bucket: str) -> dict[str, str]:
    return {
        "MAGS_OBJECT_STORE": "s3", "MAGS_S3_ENDPOINT": s3.endpoint, "MAGS_S3_BUCKET": bucket,
        "MAGS_S3_ACCESS_KEY": s3.access_key, "MAGS_S3_SECRET_KEY": s3.secret_key,
    }


def test_workspace_travels_through_s3_to_another_host(seaweedfs: SeaweedFS, tmp_path: Path) -> None:
    from mags.storage.s3 import S3ObjectStore

    bucket = f"ws-{uuid.uuid4().hex[:10]}"
    store = S3ObjectStore(seaweedfs.endpoint, bucket, seaweedfs.access_key, seaweedfs.secret_key)
    a = ServerProc(tmp_path / "a", tmp_path / "home", free_port(), "namespaces",
                   extra_env=s3_env(seaweedfs, bucket)).start()
    try:
        with Mags(api_token=a.admin_token, api_url=a.url) as m:
            r = m.run_and_wait("mkdir -p /jfs/data && echo via-s3 > /jfs/data/f && echo ok",
                               workspace_id="s3ws", persistent=True, timeout=120)
            assert r["status"] == "completed", r
            m.stop(m.find_job("s3ws")["request_id"])
        token = a.admin_token
    finally:
        a.stop(signal.SIGTERM)
    keys = [o.key for o in store.list("ws/")]
    assert any("/snapshots/" in k for k in keys) and any("/packs/" in k for k in keys)
    b = ServerProc(tmp_path / "b", tmp_path / "home2", free_port(), "namespaces",
                   extra_env={**s3_env(seaweedfs, bucket), "MAGS_DATABASE_URL": f"sqlite:///{tmp_path / 'a' / 'mags.db'}"})
    try:
        b.start()
        with Mags(api_token=token, api_url=b.url) as m:
            r = m.run_and_wait("cat /jfs/data/f", workspace_id="s3ws", persistent=True, timeout=120)
            assert [e["message"] for e in r["logs"] if e["source"] == "stdout"] == ["via-s3"], r
            m.stop(m.find_job("s3ws")["request_id"])
            m.delete_workspace("s3ws")
        assert [o.key for o in store.list("ws/")] == []
    finally:
        b.stop(signal.SIGTERM)
