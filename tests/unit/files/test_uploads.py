"""POST /mags-files: streamed to disk, size limit while streaming, safe names, owned, expiring."""

from __future__ import annotations

import hashlib
import stat
import time
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from scheduler.fake_agent import FakeAgentClient
from scheduler.helpers import execute
from sqlalchemy import update
from workspaces.helpers import status, submit

from mags.api.files import MAX_FILE_BYTES
from mags.core.files import sanitize_filename
from mags.core.schema import files
from mags.server import ControlPlane

BOUNDARY = "mags-test-boundary"


def files_dir(cp: ControlPlane) -> Path:
    return cp.settings.data_dir / "files"


def stored(cp: ControlPlane) -> list[Path]:
    d = files_dir(cp)
    return sorted(d.iterdir()) if d.exists() else []


def head(filename: bytes = b"data.bin", field: bytes = b"file") -> bytes:
    return (
        f"--{BOUNDARY}\r\n".encode()
        + b'Content-Disposition: form-data; name="'
        + field
        + b'"; filename="'
        + filename
        + b'"\r\n'
        + b"Content-Type: application/octet-stream\r\n\r\n"
    )


TAIL = f"\r\n--{BOUNDARY}--\r\n".encode()


async def body_of(size: int, filename: bytes = b"big.bin", chunk: int = 1024 * 1024) -> AsyncIterator[bytes]:
    """A multipart body generated on the fly (never whole in memory on the client side either)."""
    yield head(filename)
    block = b"\0" * chunk
    left = size
    while left > 0:
        n = min(chunk, left)
        yield block if n == chunk else block[:n]
        left -= n
    yield TAIL


async def post_raw(client: httpx.AsyncClient, content: AsyncIterator[bytes] | list[bytes]) -> httpx.Response:
    if isinstance(content, list):
        content = b"".join(content)
    return await client.post(
        "/mags-files", content=content, headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    )


async def test_upload_is_stored_privately_and_answered(cp: ControlPlane, alice: httpx.AsyncClient) -> None:
    data = b"a,b\n1,2\n"
    r = await alice.post("/mags-files", files={"file": ("data.csv", data, "text/csv")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["file_id"].startswith("file-") and body["name"] == "data.csv" and body["size"] == len(data)
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    path = files_dir(cp) / body["file_id"]
    assert path.read_bytes() == data
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in stored(cp)] == [body["file_id"]]  # no partial file left behind


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        (b"../../etc/passwd", "passwd"),
        (b"a\x00b", "ab"),
        (b"ev\x1bil\x07\x7f.txt", "evil.txt"),
        (b"C:\\\\Users\\\\x\\\\report.pdf", "report.pdf"),
        (b"..", "file"),
        (b"", "file"),
        (b"a..b..c", "a.b.c"),
        ("r\u00e9sum\u00e9.pdf".encode(), "r\u00e9sum\u00e9.pdf"),
    ],
)
async def test_names_are_sanitized(cp: ControlPlane, alice: httpx.AsyncClient, raw: bytes, safe: str) -> None:
    r = await post_raw(alice, [head(raw), b"x", TAIL])
    assert r.status_code == 200, r.text
    assert r.json()["name"] == safe
    assert (files_dir(cp) / r.json()["file_id"]).read_bytes() == b"x"


def test_sanitize_filename_rules() -> None:
    assert sanitize_filename(None) == "file"
    assert sanitize_filename("/") == "file"
    assert sanitize_filename("dir/") == "file"
    assert sanitize_filename("\u202ereverse\u2028.txt") == "reverse.txt"  # bidi and line separators
    long = sanitize_filename("x" * 300 + ".tar.gz")
    assert len(long.encode()) <= 200 and long.endswith(".gz")
    assert len(sanitize_filename("\u00e9" * 300).encode()) <= 200
    for raw in ("../x", "a/../../b", "..\\..\\c", "\x00", "."):
        name = sanitize_filename(raw)
        assert "/" not in name and "\\" not in name and ".." not in name and "\x00" not in name and name


async def test_over_100_mb_is_413_while_streaming_and_nothing_is_kept(
    cp: ControlPlane, alice: httpx.AsyncClient
) -> None:
    assert MAX_FILE_BYTES == 100 * 1024 * 1024
    # no Content-Length: the limit can only be enforced while streaming
    r = await post_raw(alice, body_of(MAX_FILE_BYTES + 1))
    assert r.status_code == 413 and "larger than" in r.json()["error"]
    assert stored(cp) == []
    # exactly 100 MB is fine
    r = await post_raw(alice, body_of(MAX_FILE_BYTES))
    assert r.status_code == 200 and r.json()["size"] == MAX_FILE_BYTES
    assert [p.name for p in stored(cp)] == [r.json()["file_id"]]


async def test_declared_length_over_the_limit_is_refused_at_once(alice: httpx.AsyncClient) -> None:
    r = await alice.post(
        "/mags-files",
        content=b"",
        headers={
            "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
            "Content-Length": str(2 * MAX_FILE_BYTES),
        },
    )
    assert r.status_code == 413


async def test_upload_memory_stays_bounded(cp: ControlPlane, alice: httpx.AsyncClient) -> None:
    size = 40 * 1024 * 1024
    tracemalloc.start()
    try:
        r = await post_raw(alice, body_of(size, chunk=64 * 1024))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.status_code == 200 and r.json()["size"] == size
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes: the upload was held in memory"


async def test_bad_uploads_are_400_and_leave_nothing(cp: ControlPlane, alice: httpx.AsyncClient) -> None:
    r = await alice.post(
        "/mags-files", content=b"hello", headers={"Content-Type": "application/octet-stream"}
    )
    assert r.status_code == 400 and "multipart/form-data" in r.json()["error"]
    r = await post_raw(alice, [head(field=b"other"), b"x", TAIL])
    assert r.status_code == 400 and 'no field named "file"' in r.json()["error"]
    r = await post_raw(alice, [head(), b"truncated"])
    assert r.status_code == 400
    assert stored(cp) == []
    anon = httpx.AsyncClient(transport=alice._transport, base_url=str(alice.base_url))
    async with anon:
        assert (await anon.post("/mags-files", files={"file": ("a", b"x")})).status_code == 401


async def test_jobs_get_their_files_and_only_their_owners(
    cp: ControlPlane, alice: httpx.AsyncClient, bob: httpx.AsyncClient, agent: FakeAgentClient
) -> None:
    a = (await alice.post("/mags-files", files={"file": ("data.csv", b"1,2\n")})).json()["file_id"]
    b = (await alice.post("/mags-files", files={"file": ("../model.bin", b"\x00\x01")})).json()["file_id"]
    job = await submit(alice, "echo ok", file_ids=[a, b, a])
    await status(alice, job, until="completed")
    req = next(r for r in agent.created if r.job_id == job)
    assert [(f.name, f.host_path) for f in req.files] == [
        ("data.csv", str(files_dir(cp) / a)),
        ("model.bin", str(files_dir(cp) / b)),
    ]
    r = await bob.post("/mags-jobs", json={"script": "cat /uploads/data.csv", "file_ids": [a]})
    assert r.status_code == 404 and a in r.json()["error"]
    r = await alice.post("/mags-jobs", json={"script": "true", "file_ids": ["file-000000000000000000000000"]})
    assert r.status_code == 404
    r = await alice.post("/mags-jobs", json={"script": "true", "file_ids": ["../../etc/passwd"]})
    assert r.status_code == 404


async def test_expired_files_are_refused_and_deleted(cp: ControlPlane, alice: httpx.AsyncClient) -> None:
    old = (await alice.post("/mags-files", files={"file": ("old.txt", b"x")})).json()
    fresh = (await alice.post("/mags-files", files={"file": ("new.txt", b"y")})).json()
    assert old["expires_at"].endswith("Z")
    await execute(cp.db, update(files).where(files.c.id == old["file_id"]).values(expires_at=time.time() - 1))
    r = await alice.post("/mags-jobs", json={"script": "true", "file_ids": [old["file_id"]]})
    assert r.status_code == 404
    assert cp.janitor is not None
    assert (await cp.janitor.run_once())["files_expired"] == [old["file_id"]]
    assert [p.name for p in stored(cp)] == [fresh["file_id"]]
    assert (await cp.janitor.run_once())["files_expired"] == []
