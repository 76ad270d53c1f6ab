"""The gateway end to end with an asyncssh client and a fake agent (no sandboxes, no root)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncssh
import httpx
import pytest

from mags.server import ControlPlane
from mags.ssh.gateway import SshGateway
from mags.ssh.ratelimit import StartupLimiter
from mags.ssh.session import SFTP_SERVER

from .conftest import ssh_access, start_sandbox
from .fake_streams import StreamingFakeAgent


async def connect(
    gateway: SshGateway, private_key: str, username: str = "root"
) -> asyncssh.SSHClientConnection:
    return await asyncssh.connect(
        "127.0.0.1", gateway.port, username=username, known_hosts=None, agent_path=None,
        client_keys=[asyncssh.import_private_key(private_key)], preferred_auth="publickey",
    )  # fmt: skip


@pytest.fixture
async def box(alice: httpx.AsyncClient, gateway: SshGateway) -> dict[str, Any]:
    job = await start_sandbox(alice, "dev")
    return {**job, **await ssh_access(alice, job["request_id"])}


@pytest.fixture
async def conn(gateway: SshGateway, box: dict[str, Any]) -> AsyncIterator[asyncssh.SSHClientConnection]:
    c = await connect(gateway, box["ssh_private_key"])
    try:
        yield c
    finally:
        c.close()
        await c.wait_closed()


async def test_exec_separates_streams_and_returns_the_exit_code(
    conn: asyncssh.SSHClientConnection, agent: StreamingFakeAgent, box: dict[str, Any]
) -> None:
    r = await conn.run("echo out; echo err >&2; exit 3", encoding=None)
    assert (r.stdout, r.stderr, r.exit_status) == (b"out\n", b"err\n", 3)
    sandbox_id, ws = agent.attaches[-1]
    assert sandbox_id == box["vm_id"]
    assert ws.first is not None and ws.first["pty"] is False and ws.first["cwd"] == "/root"
    assert (
        ws.first["command"][:2] == ["/bin/sh", "-c"]
        and ws.first["command"][-1] == "echo out; echo err >&2; exit 3"
    )


async def test_stdin_is_piped_with_its_eof(conn: asyncssh.SSHClientConnection) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB, every byte value
    r = await conn.run("cat | sha256sum | cut -c1-64", input=data, encoding=None)
    import hashlib

    assert r.exit_status == 0 and r.stdout.decode().strip() == hashlib.sha256(data).hexdigest()


async def test_large_output_arrives_whole(conn: asyncssh.SSHClientConnection) -> None:
    r = await conn.run("head -c 5000000 /dev/zero", encoding=None)
    assert r.exit_status == 0 and len(r.stdout) == 5_000_000


async def test_killed_process_reports_exit_signal(conn: asyncssh.SSHClientConnection) -> None:
    r = await conn.run("kill -TERM $$")
    assert r.exit_signal is not None and r.exit_signal[0] == "TERM"


async def test_pty_env_resize_and_signals_are_forwarded(
    conn: asyncssh.SSHClientConnection, agent: StreamingFakeAgent
) -> None:
    chan, _ = await conn.create_session(
        asyncssh.SSHClientSession, "sleep 30", term_type="vt220", term_size=(100, 40),
        env={"LANG": "C.UTF-8", "SECRET_FROM_CLIENT": "x"}, encoding=None,
    )  # fmt: skip
    for _ in range(100):
        if agent.attaches and agent.attaches[-1][1].first is not None:
            break
        await asyncio.sleep(0.01)
    ws = agent.attaches[-1][1]
    assert ws.first is not None
    assert (ws.first["pty"], ws.first["rows"], ws.first["cols"]) == (True, 40, 100)
    assert ws.first["env"] == {"LANG": "C.UTF-8", "TERM": "vt220"}  # only locale/terminal variables
    chan.change_terminal_size(120, 50)
    chan.send_signal("INT")
    await asyncio.wait_for(chan.wait_closed(), 5)
    assert {"type": "resize", "rows": 50, "cols": 120} in ws.controls
    assert {"type": "signal", "signal": 2} in ws.controls


async def test_sftp_runs_the_sandbox_sftp_server_and_other_subsystems_are_refused(
    conn: asyncssh.SSHClientConnection, agent: StreamingFakeAgent
) -> None:
    chan, _ = await conn.create_session(asyncssh.SSHClientSession, subsystem="sftp", encoding=None)
    for _ in range(100):
        if agent.attaches and agent.attaches[-1][1].first is not None:
            break
        await asyncio.sleep(0.01)
    assert agent.attaches[-1][1].first["command"] == [SFTP_SERVER]  # type: ignore[index]
    chan.close()
    with pytest.raises(asyncssh.ChannelOpenError):
        await conn.create_session(asyncssh.SSHClientSession, subsystem="netconf")


async def test_local_forwarding_reaches_only_the_sandbox(
    conn: asyncssh.SSHClientConnection, agent: StreamingFakeAgent, box: dict[str, Any]
) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello " + await reader.readline())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await conn.open_connection("localhost", port)
        writer.write(b"world\n")
        assert await asyncio.wait_for(reader.read(), 5) == b"hello world\n"
        assert agent.connects[-1] == (box["vm_id"], port)
        for host in ("10.0.0.1", "example.com", "169.254.169.254"):
            with pytest.raises(asyncssh.ChannelOpenError):
                await conn.open_connection(host, port)
        with pytest.raises(asyncssh.ChannelListenError):
            await conn.forward_remote_port("127.0.0.1", 0, "127.0.0.1", port)
    finally:
        server.close()


async def test_wrong_user_wrong_key_and_other_sandboxes(
    gateway: SshGateway, alice: httpx.AsyncClient, box: dict[str, Any], agent: StreamingFakeAgent
) -> None:
    with pytest.raises(asyncssh.PermissionDenied):
        await connect(gateway, box["ssh_private_key"], username="admin")
    stranger = asyncssh.generate_private_key("ssh-ed25519").export_private_key("openssh").decode()
    with pytest.raises(asyncssh.PermissionDenied):
        await connect(gateway, stranger)
    # another sandbox's key opens that sandbox and nothing else
    other = await start_sandbox(alice, "other")
    key2 = (await ssh_access(alice, other["request_id"]))["ssh_private_key"]
    async with await connect(gateway, key2) as c:
        await c.run("true")
    assert agent.attaches[-1][0] == other["vm_id"] != box["vm_id"]


async def test_stop_revokes_the_key_and_the_open_connection(
    gateway: SshGateway, alice: httpx.AsyncClient, box: dict[str, Any], conn: asyncssh.SSHClientConnection
) -> None:
    assert (await conn.run("true")).exit_status == 0
    assert (await alice.post(f"/mags-jobs/{box['request_id']}/stop")).status_code == 200
    with pytest.raises(asyncssh.ChannelOpenError, match="stopped"):
        await conn.run("true")  # an open connection gets no new channel
    with pytest.raises(asyncssh.PermissionDenied):
        await connect(gateway, box["ssh_private_key"])
    await gateway.sweep()  # rows deleted, connection closed
    await asyncio.wait_for(conn.wait_closed(), 5)
    assert await gateway.keys.count() == 0


async def test_repeated_failures_ban_the_address(gateway: SshGateway, box: dict[str, Any]) -> None:
    stranger = asyncssh.generate_private_key("ssh-ed25519").export_private_key("openssh").decode()
    for _ in range(5):  # the fixture's burst
        with pytest.raises(asyncssh.PermissionDenied):
            await connect(gateway, stranger)
    with pytest.raises((asyncssh.Error, OSError)):
        await connect(gateway, stranger)  # this one bans
    with pytest.raises((asyncssh.Error, OSError)):
        await connect(gateway, box["ssh_private_key"])  # even a good key, while banned
    assert gateway.limiter.banned("127.0.0.1")


async def test_access_answer_points_at_the_gateway(box: dict[str, Any], gateway: SshGateway) -> None:
    assert box["ssh_port"] == gateway.port and box["ssh_host"] == "ssh.mags.test"
    assert json.dumps(box)  # plain JSON


async def test_host_key_is_kept_across_restarts(cp: ControlPlane) -> None:
    seen = []
    for _ in range(2):
        gw = SshGateway(cp.settings, cp.db, cp.registry)
        await gw.start("127.0.0.1", 0)
        try:
            key = await asyncssh.get_server_host_key("127.0.0.1", gw.port)
            assert key is not None
            seen.append(key.get_fingerprint("sha256"))
        finally:
            await gw.close()
    assert seen[0] == seen[1]
    path = cp.settings.data_dir / "ssh_host_ed25519_key"
    assert path.stat().st_mode & 0o777 == 0o600
    assert asyncssh.read_private_key(path).get_fingerprint("sha256") == seen[0]


async def test_logins_in_progress_are_capped(gateway: SshGateway, box: dict[str, Any]) -> None:
    gateway.startups = StartupLimiter(per_addr=1, total=10)
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)  # a login that never ends
    await reader.readline()  # the server's version line: the connection is counted
    try:
        with pytest.raises((asyncssh.Error, OSError)):
            await connect(gateway, box["ssh_private_key"])
    finally:
        writer.close()
    for _ in range(100):
        if gateway.startups.in_progress() == 0:
            break
        await asyncio.sleep(0.01)
    async with await connect(gateway, box["ssh_private_key"]) as c:  # counted only until login
        assert (await c.run("true")).exit_status == 0
        assert gateway.startups.in_progress() == 0


async def test_forward_to_a_loopback_only_server_goes_through_the_relay(
    conn: asyncssh.SSHClientConnection, agent: StreamingFakeAgent
) -> None:
    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # until the client half-closes
        writer.write(b"got %d bytes" % len(data))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(count, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    agent.loopback_only.add(port)
    try:
        reader, writer = await conn.open_connection("localhost", port)
        writer.write(b"x" * 100_000)  # sent before the agent's "nothing listens": replayed
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 10) == b"got 100000 bytes"
        relay = agent.attaches[-1][1]
        assert relay.first is not None and relay.first["command"][:2] == ["python3", "-c"]
        assert relay.first["command"][-1] == str(port)
    finally:
        server.close()
