"""Isolation, as seen from inside a sandbox, on every backend."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator

import pytest

from mags.runtime.base import Sandbox, SandboxSpec
from mags.runtime.namespaces import BaseRuntime
from mags.runtime.protocol import Output

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def new(rt: BaseRuntime) -> Sandbox:
    return await rt.create(SandboxSpec(sandbox_id=f"t-{uuid.uuid4().hex[:8]}"))


async def sh(sb: Sandbox, cmd: str, timeout: float = 30) -> tuple[int, str, str]:
    r = await sb.exec(cmd, timeout=timeout)
    return r.exit_code, r.stdout.decode(), r.stderr.decode()


async def test_hello_world_streams_and_exits_zero(runtime: BaseRuntime) -> None:
    sb = await new(runtime)
    try:
        proc = await sb.spawn_script("echo Hello World")
        chunks = []
        status = None
        async for ev in proc.events():
            if isinstance(ev, Output):
                chunks.append((ev.stream, ev.data))
            else:
                status = ev
        assert chunks == [("stdout", b"Hello World\n")]
        assert status is not None and status.exit_code == 0
    finally:
        await sb.destroy()


async def test_identity_and_environment(runtime: BaseRuntime) -> None:
    sb = await new(runtime)
    try:
        code, out, _ = await sh(sb, 'hostname; id -u; pwd; echo "$HOME"; echo "$FOO"', timeout=30)
        assert code == 0
        r = await sb.exec(["/bin/sh", "-c", 'echo "$FOO"'], env={"FOO": "bar baz"})
        assert out.split("\n")[:4] == ["mags-vm", "0", "/root", "/root"]
        assert r.stdout == b"bar baz\n"
        code, out, _ = await sh(sb, "command -v curl wget git python3 node vim nano pip3 npm | wc -l")
        assert out.strip() == "9"
    finally:
        await sb.destroy()


async def test_host_processes_invisible(runtime: BaseRuntime) -> None:
    marker = f"mags-marker-{uuid.uuid4().hex}"
    host_proc = subprocess.Popen(["/bin/sh", "-c", f"exec -a {marker} sleep 60"])
    sb = await new(runtime)
    try:
        code, out, _ = await sh(sb, "ps -eo pid,args")
        assert code == 0
        assert marker not in out
        pids = [int(line.split()[0]) for line in out.strip().splitlines()[1:]]
        assert min(pids) == 1 and len(pids) < 10  # only the sandbox's own processes
    finally:
        host_proc.kill()
        host_proc.wait()
        await sb.destroy()


async def test_host_filesystem_invisible_and_image_untouched(runtime: BaseRuntime, tmp_path) -> None:
    marker = tmp_path / f"host-marker-{uuid.uuid4().hex}"
    marker.write_text("secret")
    image_root = runtime.host.settings.images_path
    a, b = await new(runtime), await new(runtime)
    try:
        code, out, _ = await sh(a, f"cat {marker}; ls {tmp_path}; ls {image_root}")
        assert code != 0 and "secret" not in out
        code, _, _ = await sh(a, "echo written > /etc/mags-write-test && echo x > /usr/bin/python3-extra")
        assert code == 0
        code, out, _ = await sh(b, "cat /etc/mags-write-test; ls /usr/bin/python3-extra")
        assert code != 0 and "written" not in out
        from mags.runtime.image import resolve_image

        rootfs = resolve_image(runtime.settings, "standard").rootfs
        assert not (rootfs / "etc" / "mags-write-test").exists()
        assert not (rootfs / "usr" / "bin" / "python3-extra").exists()
    finally:
        await a.destroy()
        await b.destroy()


async def test_privileged_operations_fail(runtime: BaseRuntime) -> None:
    sb = await new(runtime)
    try:
        code, _, err = await sh(sb, "mount -t tmpfs none /mnt")
        assert code != 0, err
        code, _, _ = await sh(sb, "mknod /tmp/sda b 8 0 && head -c 512 /tmp/sda")
        assert code != 0
        # no host block devices, and no way to make them
        code, out, _ = await sh(sb, "ls /dev")
        assert not any(name.startswith(("sd", "vd", "nvme", "loop", "mem", "kmsg")) for name in out.split())
        code, _, _ = await sh(sb, "echo 1 > /proc/sys/kernel/sysrq")
        assert code != 0
        code, _, _ = await sh(sb, "python3 -c \"import ctypes; l=ctypes.CDLL(None); import sys; sys.exit(0 if l.init_module(0,0,0)==0 else 1)\"")
        assert code != 0  # insmod: init_module refused
        code, _, _ = await sh(sb, "unshare -m true || unshare -n true")
        assert code != 0
    finally:
        await sb.destroy()


@pytest.fixture
def host_loopback_server() -> AsyncIterator[int]:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", 0))
    srv.listen(16)
    srv.setblocking(False)
    yield srv.getsockname()[1]
    srv.close()


async def test_host_services_unreachable(runtime: BaseRuntime, host_loopback_server: int) -> None:
    port = host_loopback_server
    sb = await new(runtime)
    try:
        assert runtime.host.network is not None
        gw = sb.ip.rsplit(".", 1)[0] + "." + str(int(sb.ip.rsplit(".", 1)[1]) - 1)
        probe = (
            "import socket,sys\n"
            "ok=[]\n"
            f"for h in ('127.0.0.1', '{gw}'):\n"
            "    s=socket.socket(); s.settimeout(1.5)\n"
            "    try:\n"
            f"        s.connect((h,{port})); ok.append(h)\n"
            "    except OSError: pass\n"
            "print(ok)\n"
        )
        code, out, err = await sh(sb, f"python3 -c \"{probe}\"")
        assert code == 0, err
        assert out.strip() == "[]"
    finally:
        await sb.destroy()


async def test_other_sandbox_unreachable_but_host_can_reach_it(runtime: BaseRuntime) -> None:
    a, b = await new(runtime), await new(runtime)
    try:
        server = await a.spawn(["python3", "-m", "http.server", "8000", "--bind", "0.0.0.0"])
        ok = False
        for _ in range(100):
            try:
                _, w = await asyncio.wait_for(asyncio.open_connection(a.ip, 8000), 1)
                w.close()
                ok = True
                break
            except (OSError, TimeoutError):
                await asyncio.sleep(0.1)
        assert ok, "host cannot reach the sandbox's server"
        code, out, _ = await sh(b, f"curl -sS -m 3 -o /dev/null -w '%{{http_code}}' http://{a.ip}:8000/")
        assert code != 0 and out != "200"
        await server.signal(9)
    finally:
        await a.destroy()
        await b.destroy()


async def test_internet_egress_works(runtime: BaseRuntime) -> None:
    sb = await new(runtime)
    try:
        code, out, err = await sh(
            sb, "curl -sS -m 20 -o /dev/null -w '%{http_code}' https://pypi.org/simple/six/", timeout=40
        )
        assert code == 0 and out == "200", err
    finally:
        await sb.destroy()


async def test_metadata_and_private_ranges_blocked(runtime: BaseRuntime) -> None:
    sb = await new(runtime)
    try:
        code, _, _ = await sh(sb, "curl -sS -m 2 http://169.254.169.254/ -o /dev/null")
        assert code != 0
    finally:
        await sb.destroy()


async def test_exec_into_running_sandbox_with_pty(runtime: BaseRuntime) -> None:
    sb = await new(runtime)
    try:
        bg = await sb.spawn(["sleep", "30"])
        proc = await sb.spawn(["/bin/sh", "-c", "tty; stty size; ps -e | grep -c sleep"], pty=True, rows=30, cols=100)
        out = bytearray()
        async for ev in proc.events():
            if isinstance(ev, Output):
                out.extend(ev.data)
            else:
                assert ev.exit_code == 0
        text = out.decode()
        assert "/dev/pts/" in text and "30 100" in text and text.strip().endswith("1")
        await bg.signal(9)
        assert (await bg.wait()).signal == 9
    finally:
        await sb.destroy()


async def test_stdin_and_files(runtime: BaseRuntime) -> None:
    sb = await new(runtime)
    try:
        r = await sb.exec(["sh", "-c", "wc -c"], stdin_data=b"x" * 100_000)
        assert r.stdout.strip() == b"100000"
        await sb.put_file("/uploads/data.bin", os.urandom(300_000) + b"end", 0o600)
        code, out, _ = await sh(sb, "stat -c '%s %a' /uploads/data.bin; tail -c 3 /uploads/data.bin")
        assert out == "300003 600\nend"
    finally:
        await sb.destroy()
