"""Tenancy: Bob, holding a valid token, aims every endpoint at every kind of Alice's objects.

Each answer must be a 404 that says no more than for an id that does not exist (never a 403,
never her data), nothing of hers may change, and no listing of Bob's may include any of her
objects.  The SSH gateway is checked with the real OpenSSH client: Bob's key only ever opens
Bob's sandbox.  API scoping does not depend on the sandbox runtime, so this module runs on
the namespaces runtime only (and fast).
"""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from mags import Mags
from mags.errors import ClientError
from tests.integration.server_fixture import ServerProc
from tests.integration.ssh.helpers import Access, grant, missing_binaries
from tests.security.conftest import Tenants, start_server
from tests.security.helpers import guest_net

SECRET = "ALICE-SECRET-" + uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def sec_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    """API scoping is runtime-independent: one namespaces server for the module."""
    srv = start_server(tmp_path_factory, "namespaces")
    try:
        yield srv
    finally:
        srv.stop(signal.SIGTERM)


@dataclass
class AliceObjects:
    """Everything Alice owns, as Bob could learn the ids (they are in URLs, logs, screenshots)."""

    box: str  # a live persistent sandbox (job id) on workspace `workspace`
    box_ip: str
    workspace: str  # persistent, synced: usable as a base
    workspace2: str  # a local workspace Bob never names
    finished_job: str  # a completed job whose logs hold SECRET
    file_id: str
    subdomain: str  # the box's public URL
    alias: str
    cron_id: str
    cron_name: str
    token_id: str
    ssh: Access


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("keys")
    d.chmod(0o700)
    return d


@pytest.fixture(scope="module")
def alices(
    tenants: Tenants, key_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AliceObjects]:
    tag = uuid.uuid4().hex[:6]
    with tenants.client(tenants.alice_token) as alice:
        upload = tmp_path_factory.mktemp("upload") / "alice.txt"
        upload.write_text(SECRET)
        file_id = alice.upload_file(upload)
        ws = f"ten-a-{tag}"
        box = alice.new(ws, persistent=True, timeout=120)["request_id"]
        written = alice.exec(box, f"echo {SECRET} > /root/secret.txt && "
                                  "(nohup python3 -m http.server 8080 >/dev/null 2>&1 &) && echo ok")  # fmt: skip
        assert written["exit_code"] == 0, written
        alice.sync(box)  # a committed head: the workspace can be a base
        ws2 = f"ten-a2-{tag}"
        assert alice.run_and_wait("true", workspace_id=ws2, timeout=120)["exit_code"] == 0
        finished = alice.run_and_wait(f"echo {SECRET}", name=f"ten-a-job-{tag}", timeout=120)
        assert finished["exit_code"] == 0
        subdomain = alice.enable_access(box, port=8080)["subdomain"]
        alias = alice.url_alias_create(f"alice-{tag}", ws)["subdomain"]
        cron = alice.cron_create(f"ten-a-cron-{tag}", "0 0 1 1 *", f"echo {SECRET}", workspace_id=ws)
        tokens = alice.token_list()["tokens"]
        assert len(tokens) == 1
        ssh = grant(tenants.server.url, tenants.alice_token, box, key_dir, "alice")
        yield AliceObjects(
            box=box, box_ip=guest_net(alice, box).ip, workspace=ws, workspace2=ws2,
            finished_job=finished["request_id"], file_id=file_id, subdomain=subdomain, alias=alias,
            cron_id=cron["id"], cron_name=cron["name"], token_id=str(tokens[0]["id"]), ssh=ssh,
        )  # fmt: skip
        alice.stop(box)


@pytest.fixture(scope="module")
def bob_api(tenants: Tenants) -> Iterator[httpx.Client]:
    """Bob's raw HTTP client: every endpoint, exactly as sent."""
    with httpx.Client(
        base_url=f"{tenants.server.url}/api/v1",
        headers={"Authorization": f"Bearer {tenants.bob_token}"},
        timeout=30,
    ) as client:
        yield client


def assert_not_found(resp: httpx.Response, *hidden: str) -> None:
    """A 404 in the API's error shape that reveals none of ``hidden``."""
    assert resp.status_code == 404, (resp.request.method, resp.request.url, resp.status_code, resp.text)
    assert set(resp.json()) <= {"error", "code"}, resp.text
    for value in (SECRET, *hidden):
        assert value not in resp.text, (value, resp.text)


def same_answer_as_for_a_missing_id(
    bob_api: httpx.Client, method: str, path: str, real_id: str, **kw: object
) -> None:
    """Alice's id gets exactly the answer a made-up id gets (no existence oracle)."""
    fake = str(uuid.uuid4())
    real = bob_api.request(method, path.format(id=real_id), **kw)  # type: ignore[arg-type]
    made_up = bob_api.request(method, path.format(id=fake), **kw)  # type: ignore[arg-type]
    assert real.status_code == made_up.status_code == 404, (real.text, made_up.text)
    assert real.text.replace(real_id, "X") == made_up.text.replace(fake, "X"), (real.text, made_up.text)


def delete_when_idle(m: Mags, workspace: str, timeout: float = 60) -> None:
    """Delete a workspace once the sandbox of its last (finished) job is gone."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            m.delete_workspace(workspace)
            return
        except ClientError as exc:
            if exc.status_code != 409 or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# ---------------------------------------------------------------------- jobs
JOB_ENDPOINTS = [
    ("GET", "/mags-jobs/{id}/status", {}),
    ("GET", "/mags-jobs/{id}/status?wait=1&include=logs", {}),
    ("GET", "/mags-jobs/{id}/logs", {}),
    ("GET", "/mags-jobs/{id}/logs?after=0&limit=5", {}),
    ("GET", "/mags-jobs/{id}/logs?follow=true", {"headers": {"Accept": "text/event-stream"}}),
    ("PATCH", "/mags-jobs/{id}", {"json": {"no_sleep": True}}),
    ("PATCH", "/mags-jobs/{id}", {"json": {"startup_command": "echo pwned"}}),
    ("POST", "/mags-jobs/{id}/exec", {"json": {"command": "cat /root/secret.txt", "timeout": 5}}),
    ("POST", "/mags-jobs/{id}/stop", {}),
    ("POST", "/mags-jobs/{id}/sync", {}),
    ("POST", "/mags-jobs/{id}/access", {"json": {"port": 22}}),
    ("POST", "/mags-jobs/{id}/access", {"json": {"port": 8080}}),
]


@pytest.mark.parametrize(
    ("method", "path", "kw"),
    JOB_ENDPOINTS,
    ids=[f"{m} {p.split('{id}')[1] or '/'} {kw.get('json', '')}" for m, p, kw in JOB_ENDPOINTS],
)
@pytest.mark.parametrize("which", ["live sandbox", "finished job"])
def test_bob_gets_404_on_every_endpoint_of_alices_jobs(
    bob_api: httpx.Client, alices: AliceObjects, method: str, path: str, kw: dict, which: str
) -> None:
    job = alices.box if which == "live sandbox" else alices.finished_job
    resp = bob_api.request(method, path.format(id=job), **kw)
    assert "text/event-stream" not in resp.headers.get("content-type", "")
    assert_not_found(resp, alices.workspace, alices.subdomain, alices.box_ip)
    same_answer_as_for_a_missing_id(bob_api, method, path, job, **kw)


def test_alices_sandbox_is_untouched_by_bobs_attempts(tenants: Tenants, alices: AliceObjects) -> None:
    with tenants.client(tenants.alice_token) as alice:
        job = alice.status(alices.box)
        assert (job["status"], job["vm_status"]) == ("running", "running"), job
        assert job["no_sleep"] is False and job["startup_command"] is None, job
        assert alice.exec(alices.box, "cat /root/secret.txt")["output"].strip() == SECRET
        assert SECRET in " ".join(line["message"] for line in alice.logs(alices.finished_job)["logs"])


def test_bob_cannot_list_alices_jobs_or_see_them_in_his_usage(tenants: Tenants, alices: AliceObjects) -> None:
    with tenants.client(tenants.bob_token) as bob:
        jobs = bob.list_jobs(page_size=500)
        ids = {j["request_id"] for j in jobs["jobs"]}
        assert alices.box not in ids and alices.finished_job not in ids
        assert not any(str(j.get("name") or "").startswith("ten-a") for j in jobs["jobs"]), jobs
        assert bob.usage()["total_jobs"] == jobs["total"]


# ---------------------------------------------------------------------- files
def test_bob_cannot_use_alices_upload_in_a_job(
    bob_api: httpx.Client, tenants: Tenants, alices: AliceObjects
) -> None:
    before = bob_api.get("/mags-jobs", params={"page_size": 500}).json()["total"]
    resp = bob_api.post(
        "/mags-jobs", json={"script": "cat /uploads/*", "type": "inline", "file_ids": [alices.file_id]}
    )
    assert_not_found(resp)
    assert bob_api.get("/mags-jobs", params={"page_size": 500}).json()["total"] == before


# ---------------------------------------------------------------------- workspaces
def test_bob_cannot_delete_alices_workspaces(
    bob_api: httpx.Client, tenants: Tenants, alices: AliceObjects
) -> None:
    for ws in (alices.workspace, alices.workspace2):
        assert_not_found(bob_api.delete(f"/mags-workspaces/{ws}"))
        assert_not_found(bob_api.delete(f"/mags-workspaces/{ws}", params={"force": "true"}))
    with tenants.client(tenants.alice_token) as alice:
        names = {w["workspace_id"] for w in alice.list_workspaces()["workspaces"]}
    assert {alices.workspace, alices.workspace2} <= names


def test_bob_cannot_fork_alices_workspace(bob_api: httpx.Client, alices: AliceObjects) -> None:
    for body in (
        {"base_workspace_id": alices.workspace},
        {"base_workspace_id": alices.workspace, "workspace_id": "bob-fork"},
    ):
        resp = bob_api.post("/mags-jobs", json={"script": "cat /root/secret.txt", "type": "inline", **body})
        assert_not_found(resp)


def test_bob_naming_alices_workspace_gets_an_empty_one_of_his_own(
    tenants: Tenants, alices: AliceObjects
) -> None:
    with tenants.client(tenants.bob_token) as bob:
        listed = {w["workspace_id"] for w in bob.list_workspaces()["workspaces"]}
        assert not listed & {alices.workspace, alices.workspace2}, listed
        res = bob.run_and_wait(
            "ls -a /root; cat /root/secret.txt", workspace_id=alices.workspace, timeout=120
        )
        assert SECRET not in str(res["logs"]), res
        delete_when_idle(bob, alices.workspace)  # his own, of the same name
    with tenants.client(tenants.alice_token) as alice:
        assert alice.exec(alices.box, "cat /root/secret.txt")["output"].strip() == SECRET
        assert alices.workspace in {w["workspace_id"] for w in alice.list_workspaces()["workspaces"]}


# ---------------------------------------------------------------------- cron
@pytest.mark.parametrize("by", ["id", "name"])
def test_bob_gets_404_for_alices_cron(
    bob_api: httpx.Client, tenants: Tenants, alices: AliceObjects, by: str
) -> None:
    ref = alices.cron_id if by == "id" else alices.cron_name
    assert_not_found(bob_api.get(f"/mags-cron/{ref}"))
    assert_not_found(bob_api.patch(f"/mags-cron/{ref}", json={"enabled": False}))
    assert_not_found(bob_api.patch(f"/mags-cron/{ref}", json={"script": "echo pwned"}))
    assert_not_found(bob_api.delete(f"/mags-cron/{ref}"))
    assert all(c["id"] != alices.cron_id for c in bob_api.get("/mags-cron").json()["cron_jobs"])
    with tenants.client(tenants.alice_token) as alice:
        cron = alice.cron_get(alices.cron_id)
    assert cron["enabled"] is True and SECRET in cron["script"], cron


def test_a_cron_bob_names_after_alices_workspace_is_his_own(tenants: Tenants, alices: AliceObjects) -> None:
    """Workspace names are per tenant: the cron is Bob's, for a workspace of his own of that name."""
    with tenants.client(tenants.bob_token) as bob:
        cron = bob.cron_create(
            f"bob-on-{alices.workspace}", "0 0 1 1 *", "ls /root", workspace_id=alices.workspace
        )
        try:
            assert cron["id"] in {c["id"] for c in bob.cron_list()["cron_jobs"]}
            with tenants.client(tenants.alice_token) as alice:
                assert cron["id"] not in {c["id"] for c in alice.cron_list()["cron_jobs"]}
                with pytest.raises(ClientError) as err:
                    alice.cron_get(cron["id"])
                assert err.value.status_code == 404
        finally:
            bob.cron_delete(cron["id"])


# ---------------------------------------------------------------------- URL aliases
def test_bob_cannot_delete_or_take_alices_url_alias(
    bob_api: httpx.Client, tenants: Tenants, alices: AliceObjects
) -> None:
    assert_not_found(bob_api.delete(f"/mags-url-aliases/{alices.alias}"))
    assert bob_api.get("/mags-url-aliases").json()["aliases"] == []
    # a subdomain is global: Alice's name is taken (409, documented), not re-pointed to Bob
    with tenants.client(tenants.bob_token) as bob:
        bob.run_and_wait("true", workspace_id="bob-ws", timeout=120)
    taken = bob_api.post("/mags-url-aliases", json={"subdomain": alices.alias, "workspace_id": "bob-ws"})
    assert taken.status_code == 409, taken.text
    assert alices.workspace not in taken.text
    with tenants.client(tenants.alice_token) as alice:
        mine = {a["subdomain"]: a for a in alice.url_alias_list()["aliases"]}
    assert mine[alices.alias]["workspace_id"] == alices.workspace


def test_bob_cannot_point_an_alias_at_alices_workspace(bob_api: httpx.Client, alices: AliceObjects) -> None:
    resp = bob_api.post(
        "/mags-url-aliases",
        json={"subdomain": f"bob-{uuid.uuid4().hex[:6]}", "workspace_id": alices.workspace2},
    )
    assert_not_found(resp)


# ---------------------------------------------------------------------- tokens
def test_bob_cannot_see_or_revoke_alices_tokens(
    bob_api: httpx.Client, tenants: Tenants, alices: AliceObjects
) -> None:
    tokens = bob_api.get("/tokens").json()["tokens"]
    assert {t["user"] for t in tokens} == {"bob"}, tokens
    assert alices.token_id not in {str(t["id"]) for t in tokens}
    assert_not_found(bob_api.delete(f"/tokens/{alices.token_id}"))
    with tenants.client(tenants.alice_token) as alice:
        assert alice.whoami()["user"] == "alice"


def test_a_tenant_cannot_mint_tokens_for_others_or_admin_tokens(bob_api: httpx.Client) -> None:
    """Not another tenant's object, so 403 (API-NOTES "Tokens and users"), and nothing minted."""
    for body in ({"user": "alice"}, {"user": "admin"}, {"admin": True}, {"user": "bob", "admin": True}):
        resp = bob_api.post("/tokens", json=body)
        assert resp.status_code == 403, (body, resp.text)
        assert "token" not in resp.json()
    assert {t["user"] for t in bob_api.get("/tokens").json()["tokens"]} == {"bob"}


# ---------------------------------------------------------------------- SSH
@pytest.fixture(scope="module")
def bobs_ssh(tenants: Tenants, key_dir: Path) -> Iterator[Access]:
    if missing_binaries():
        pytest.skip(f"OpenSSH client tools missing: {missing_binaries()}")
    with tenants.client(tenants.bob_token) as bob:
        box = bob.new(f"ten-b-{uuid.uuid4().hex[:6]}", timeout=120)["request_id"]
        ready = bob.exec(
            box,
            "echo BOB-BOX > /root/whoami.txt && (nohup python3 -m http.server 8080 >/dev/null 2>&1 &) && echo ok",
        )
        assert ready["exit_code"] == 0, ready
        try:
            yield grant(tenants.server.url, tenants.bob_token, box, key_dir, "bob")
        finally:
            bob.stop(box)


def test_bobs_ssh_key_opens_only_bobs_sandbox(bobs_ssh: Access, alices: AliceObjects) -> None:
    r = bobs_ssh.ssh("cat /root/whoami.txt; cat /root/secret.txt")
    assert b"BOB-BOX" in r.stdout and SECRET.encode() not in r.stdout + r.stderr, r
    # naming Alice's sandbox as the SSH user does not select it: refused outright
    for user in (alices.box, alices.workspace, "alice", f"root+{alices.box}"):
        argv = bobs_ssh.ssh_argv(key=bobs_ssh.key)
        argv[-1] = f"{user}@{bobs_ssh.host}"
        r = subprocess.run([*argv, "cat /root/secret.txt"], capture_output=True, timeout=60, check=False)
        assert r.returncode == 255 and SECRET.encode() not in r.stdout, (user, r)
    # Alice's key still opens hers (the probes above did not lock her out)
    r = alices.ssh.ssh("cat /root/secret.txt")
    assert r.stdout.strip() == SECRET.encode(), r


def test_bob_cannot_forward_through_the_gateway_to_alices_sandbox(
    bobs_ssh: Access, alices: AliceObjects
) -> None:
    request = b"GET / HTTP/1.0\r\n\r\n"
    own = subprocess.run(
        bobs_ssh.ssh_argv("-W", "localhost:8080"), input=request, capture_output=True, timeout=60, check=False
    )
    assert own.stdout.startswith(b"HTTP/1."), own  # control: forwarding works for his own sandbox
    for target in (f"{alices.box_ip}:8080", f"{alices.subdomain}.localhost:8080"):
        r = subprocess.run(
            bobs_ssh.ssh_argv("-W", target), input=request, capture_output=True, timeout=60, check=False
        )
        assert b"HTTP/1." not in r.stdout, (target, r)
