"""Key issuing through the access call, lookup by fingerprint, revocation when the VM stops."""

from __future__ import annotations

from collections.abc import Iterator

import asyncssh
import httpx
import pytest
from core.pg import postgres_server, skip_reason
from sqlalchemy import update

from mags.core.db import create_database
from mags.core.ids import Clock, new_request_id
from mags.core.jobs import JobStore, NewJob
from mags.core.migrate import run_migrations
from mags.core.schema import jobs
from mags.core.tokens import TokenStore
from mags.server import ControlPlane
from mags.ssh.keys import MAX_KEYS_PER_JOB, SshKeyStore, generate_key_pair, public_key_text

from .conftest import ssh_access, start_sandbox


async def test_access_issues_a_key_bound_to_that_sandbox(cp: ControlPlane, alice: httpx.AsyncClient) -> None:
    job = await start_sandbox(alice, "dev")
    answer = await ssh_access(alice, job["request_id"])
    assert answer["success"] is True
    assert answer["ssh_host"] == "ssh.mags.test" and answer["ssh_user"] == "root"
    key = asyncssh.import_private_key(answer["ssh_private_key"])
    assert answer["ssh_private_key"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert key.get_fingerprint("sha256") == answer["ssh_key_fingerprint"]

    store = SshKeyStore(cp.db, cp.clock)
    target = await store.find(answer["ssh_key_fingerprint"], public_key_text(key))
    assert target is not None and target.alive
    assert (target.job_id, target.vm_id) == (job["request_id"], job["vm_id"])
    # the private key is not stored anywhere: only the public half
    rows = await cp.db.read(lambda c: [tuple(r) for r in c.exec_driver_sql("SELECT * FROM ssh_keys").all()])
    assert len(rows) == 1 and "PRIVATE" not in repr(rows)


async def test_a_forged_key_with_a_known_fingerprint_is_refused(
    cp: ControlPlane, alice: httpx.AsyncClient
) -> None:
    job = await start_sandbox(alice, "dev")
    answer = await ssh_access(alice, job["request_id"])
    store = SshKeyStore(cp.db, cp.clock)
    other = generate_key_pair()
    assert await store.find(answer["ssh_key_fingerprint"], other.public_key) is None
    assert await store.find(other.fingerprint, other.public_key) is None


async def test_access_needs_a_live_sandbox_and_ownership(
    cp: ControlPlane, alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    job = await start_sandbox(alice, "dev")
    r = await bob.post(f"/mags-jobs/{job['request_id']}/access", json={"port": 22})
    assert r.status_code == 404  # never reveal other tenants' jobs
    await alice.post(f"/mags-jobs/{job['request_id']}/stop")
    r = await alice.post(f"/mags-jobs/{job['request_id']}/access", json={"port": 22})
    assert r.status_code == 409 and "no running or sleeping sandbox" in r.json()["error"]


async def test_keys_are_revoked_when_the_vm_stops(cp: ControlPlane, alice: httpx.AsyncClient) -> None:
    one = await start_sandbox(alice, "one")
    two = await start_sandbox(alice, "two")
    a1 = await ssh_access(alice, one["request_id"])
    await ssh_access(alice, two["request_id"])
    store = SshKeyStore(cp.db, cp.clock)
    key = asyncssh.import_private_key(a1["ssh_private_key"])

    r = await alice.post(f"/mags-jobs/{one['request_id']}/stop")
    assert r.status_code == 200
    # refused at once (liveness is part of the lookup), deleted by the next sweep
    target = await store.find(a1["ssh_key_fingerprint"], public_key_text(key))
    assert target is not None and not target.alive
    assert await store.revoke_dead() == 1
    assert await store.find(a1["ssh_key_fingerprint"], public_key_text(key)) is None
    assert await store.count(two["request_id"]) == 1  # the other sandbox's key stays


async def test_a_key_of_an_earlier_vm_of_the_same_job_is_refused(
    cp: ControlPlane, alice: httpx.AsyncClient
) -> None:
    job = await start_sandbox(alice, "dev")
    answer = await ssh_access(alice, job["request_id"])
    key = asyncssh.import_private_key(answer["ssh_private_key"])
    await cp.db.write(
        lambda c: c.execute(
            update(jobs).where(jobs.c.request_id == job["request_id"]).values(vm_id="vm-other")
        )
    )
    assert (
        await SshKeyStore(cp.db, cp.clock).find(answer["ssh_key_fingerprint"], public_key_text(key)) is None
    )


async def test_keys_per_job_are_capped(cp: ControlPlane, alice: httpx.AsyncClient) -> None:
    job = await start_sandbox(alice, "dev")
    store = SshKeyStore(cp.db, cp.clock)
    first = await store.issue(1, job["request_id"], job["vm_id"])
    for _ in range(MAX_KEYS_PER_JOB):
        await store.issue(1, job["request_id"], job["vm_id"])
    assert await store.count(job["request_id"]) == MAX_KEYS_PER_JOB
    assert await store.find(first.fingerprint, first.public_key) is None  # the oldest went


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    with postgres_server() as url:
        yield url


async def test_key_store_on_postgres(pg_url: str) -> None:
    db = create_database(pg_url)
    try:
        await run_migrations(db)
        clock = Clock()
        user = (await TokenStore(db, clock).ensure_user("pg-ssh"))._mapping["id"]
        jobs_store = JobStore(db, clock)
        ids = [new_request_id(), new_request_id()]
        for i, rid in enumerate(ids):
            await jobs_store.create(user, NewJob(request_id=rid, script="sleep infinity", persistent=True))
            await db.write(
                lambda c, rid=rid, i=i: c.execute(
                    update(jobs).where(jobs.c.request_id == rid).values(vm_id=f"vm-{i}", vm_status="running")
                )
            )
        store = SshKeyStore(db, clock)
        k0 = await store.issue(user, ids[0], "vm-0")
        k1 = await store.issue(user, ids[1], "vm-1")
        found = await store.find(k0.fingerprint, k0.public_key)
        assert found is not None and found.job_id == ids[0] and found.alive
        assert await store.alive_jobs(ids) == set(ids)
        await db.write(
            lambda c: c.execute(update(jobs).where(jobs.c.request_id == ids[0]).values(vm_status="stopped"))
        )
        assert await store.revoke_dead() == 1
        assert await store.find(k0.fingerprint, k0.public_key) is None
        assert await store.find(k1.fingerprint, k1.public_key) is not None
    finally:
        await db.close()
