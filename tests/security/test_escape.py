"""Escape probes on both runtimes: nothing a guest does changes a host file, inode or device.

Each test runs what an attacker with a tenant token would run inside a sandbox, then checks the
*host* (stat of the device nodes and of the launcher binary, sizes of the agent's files, the
uid a guest process has on the host), not only the error the guest saw.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from pathlib import Path

import pytest

from mags import Mags
from mags.config import load_settings
from tests.integration.server_fixture import ServerProc

HOST_DEVICES = ["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty"]


def _inode_state(path: str) -> tuple[int, int, int, int, int, int]:
    st = os.stat(path)
    return (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_ctime_ns, st.st_size)


def _run(m: Mags, script: str, **opts: object) -> dict:
    res = m.run_and_wait(script, timeout=120, **opts)
    res["text"] = "\n".join(line["message"] for line in res.get("logs", []) if line["source"] != "system")
    return res


def _launcher_binaries() -> list[Path]:
    return sorted((load_settings().images_path.parent / "bin").glob("mags-sandbox-*"))


def test_guest_cannot_change_host_device_nodes(alice: Mags) -> None:
    before = {d: _inode_state(d) for d in HOST_DEVICES if os.path.exists(d)}
    res = _run(alice, " ; ".join([
        "touch -m -d 2001-02-03 /dev/null", "touch -a -d 2001-02-03 /dev/zero", "chmod 0667 /dev/full",
        "chown 1:1 /dev/urandom", "chmod 0600 /dev/random", "chmod 0600 /dev/tty",
        "setfattr -n user.x -v y /dev/null", "rm -f /dev/null && mknod /dev/null c 1 3",
        # the devices still do their job
        "echo ok > /dev/null && head -c 4 /dev/zero | od -An -tx1 && echo devices-work",
    ]))
    assert "devices-work" in res["text"], res
    assert {d: _inode_state(d) for d in before} == before


def test_guest_cannot_reach_init_or_the_host_launcher(alice: Mags, sec_server: ServerProc) -> None:
    binaries = _launcher_binaries()
    assert binaries, "no launcher binary found on the host"
    before = {b: _inode_state(str(b)) for b in binaries}
    res = _run(alice, " ; ".join([
        "touch /proc/1/exe", "chmod 000 /proc/1/exe", "cat /proc/1/exe > /tmp/exe",
        "echo exe-size=$(stat -c %s /tmp/exe 2>/dev/null || echo none)",
        "ls /proc/1/fd/ >/dev/null 2>&1 && echo fd-listable",
        "cat /proc/1/environ >/dev/null 2>&1 && echo environ-readable",
        "ls /proc/1/root/ >/dev/null 2>&1 && echo root-listable",
        # ptrace(PTRACE_ATTACH, 1): refused for a non-dumpable init
        "python3 -c 'import ctypes; print(\"ptrace=%d\" % ctypes.CDLL(None).ptrace(16, 1, 0, 0))'",
    ]))
    text = res["text"]
    if sec_server.runtime == "namespaces":
        # a non-dumpable init: its descriptors, environment and root are out of reach
        assert "fd-listable" not in text and "environ-readable" not in text and "root-listable" not in text, text
    # (gVisor lists init's descriptors, but they are a socket and /dev/null, which cannot be
    # reopened or written: see the next test)
    assert re.search(r"exe-size=(none|0)\b", text), text
    assert "ptrace=-1" in text, text
    assert {b: _inode_state(str(b)) for b in binaries} == before
    # and every later sandbox still starts (a broken launcher would break them all)
    assert _run(alice, "echo still-fine")["text"].strip() == "still-fine"


def test_guest_cannot_write_to_host_files_through_init_fds(alice: Mags, sec_server: ServerProc) -> None:
    sb_dir = sec_server.data_dir / "run" / "sb"

    def host_bytes() -> int:
        return sum(p.stat().st_size for p in sb_dir.glob("*") if p.is_file()) if sb_dir.exists() else 0

    before = host_bytes()
    res = _run(alice, " ; ".join([
        "dd if=/dev/zero bs=1M count=64 >> /proc/1/fd/2 2>/dev/null && echo wrote-fd2",
        "dd if=/dev/zero bs=1M count=8 >> /proc/1/fd/1 2>/dev/null && echo wrote-fd1",
        # a forged EXIT frame (type 68) for the script's own id would fake its exit code
        "printf 'D\\001\\000\\000\\000\\010\\000\\000\\000\\000\\000\\000\\000\\000\\000\\000\\000' > /proc/1/fd/1"
        " 2>/dev/null && echo forged",
        "exit 3",
    ]))
    # (under gVisor init's fd 2 is the guest's own /dev/null: writing to it is harmless)
    assert "wrote-fd1" not in res["text"] and "forged" not in res["text"], res
    if sec_server.runtime == "namespaces":
        assert "wrote-fd2" not in res["text"], res
    assert res["exit_code"] == 3, res
    assert host_bytes() - before < 1024 * 1024, "a guest grew host files through init's descriptors"


def test_sandbox_root_is_not_host_root(alice: Mags, sec_server: ServerProc) -> None:
    marker = f"mags-uid-probe-{uuid.uuid4().hex[:8]}"
    name = f"uid-{uuid.uuid4().hex[:6]}"
    alice.new(name)
    try:
        alice.exec(name, f"cp /bin/sleep /tmp/{marker} && (nohup /tmp/{marker} 300 >/dev/null 2>&1 &)")
        uids = []
        deadline = time.monotonic() + 10
        while not uids and time.monotonic() < deadline:
            for d in Path("/proc").iterdir():
                try:
                    if d.name.isdigit() and marker in (d / "cmdline").read_text():
                        status = (d / "status").read_text()
                        uids.append(int(re.search(r"^Uid:\s+(\d+)", status, re.M).group(1)))  # type: ignore[union-attr]
                except OSError:
                    continue
            time.sleep(0.1)
        if sec_server.runtime == "gvisor":
            # guest processes live inside gVisor's sentry: none is a host process at all
            assert uids == []
        else:
            assert uids, "the guest's process was not found on the host"
            assert all(u >= 65536 for u in uids), f"guest root runs as host uid {uids}"
        # inside, it is root, and files it creates are root's
        out = alice.exec(name, "id -u; touch /root/mine; stat -c %u /root/mine")
        assert out["output"].split() == ["0", "0"], out
    finally:
        alice.stop(name)


def test_guest_mountinfo_shows_no_host_paths(alice: Mags, sec_server: ServerProc) -> None:
    res = _run(alice, "cat /proc/self/mountinfo")
    text = res["text"]
    assert text.strip(), res
    for host_path in (str(sec_server.data_dir), str(load_settings().images_path), "/var/lib/mags"):
        assert host_path not in text, f"mountinfo shows {host_path}:\n{text}"


def test_kernel_layout_and_firmware_are_hidden(alice: Mags) -> None:
    res = _run(alice, " ; ".join([
        "echo slab=$(head -c 200 /proc/slabinfo 2>/dev/null | wc -c)",
        "echo vmalloc=$(head -c 200 /proc/vmallocinfo 2>/dev/null | wc -c)",
        "echo kcore=$(head -c 200 /proc/kcore 2>/dev/null | wc -c)",
        "echo acpi=$(ls /sys/firmware/acpi/tables 2>/dev/null | wc -l)",
        "echo sysrw=$(touch /sys/kernel/x 2>/dev/null && echo yes || echo no)",
        "echo procsys=$(echo 1 > /proc/sys/vm/drop_caches 2>/dev/null && echo yes || echo no)",
    ]))
    values = dict(re.findall(r"^(\w+)=(\w+)$", res["text"], re.M))
    assert values == {"slab": "0", "vmalloc": "0", "kcore": "0", "acpi": "0", "sysrw": "no", "procsys": "no"}, res


def test_raw_sockets_refused_but_ping_sockets_and_low_ports_work(alice: Mags) -> None:
    script = """
import socket
def attempt(*a):
    try:
        socket.socket(*a).close(); return "ok"
    except OSError as e:
        return "err"
print("raw", attempt(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW))
print("packet", attempt(socket.AF_PACKET, socket.SOCK_RAW, 0))
print("ping", attempt(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP))
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 80)); s.listen()
print("port80 ok")
"""
    res = _run(alice, f"python3 - <<'EOF'\n{script}\nEOF\nping -c1 -W2 127.0.0.1 >/dev/null && echo ping-command ok")
    lines = set(res["text"].splitlines())
    assert {"raw err", "packet err", "ping ok", "port80 ok", "ping-command ok"} <= lines, res


@pytest.mark.parametrize("family", [40, 44], ids=["AF_VSOCK", "AF_XDP"])
def test_host_facing_socket_families_refused(alice: Mags, family: int) -> None:
    res = _run(alice, f"python3 -c 'import socket; socket.socket({family}, socket.SOCK_STREAM if {family} == 40 "
                      f"else socket.SOCK_RAW)' 2>&1 && echo opened")
    assert "opened" not in res["text"], res


def test_io_uring_refused(alice: Mags) -> None:
    # io_uring_setup(2, &params): -1 with ENOSYS (namespaces: seccomp) / unsupported (gVisor)
    script = ("import ctypes, os; libc = ctypes.CDLL(None, use_errno=True); p = ctypes.create_string_buffer(120); "
              "r = libc.syscall(425, 2, p); print('io_uring', r, os.strerror(ctypes.get_errno()))")
    res = _run(alice, f'python3 -c "{script}"')
    assert re.search(r"^io_uring -1 ", res["text"], re.M), res


def test_files_keep_guest_ids_in_workspaces(alice: Mags) -> None:
    ws = f"ids-{uuid.uuid4().hex[:6]}"
    first = _run(alice, "mkdir -p /root/d && chown 1000:1000 /root/d && touch /root/r && echo done", workspace_id=ws)
    assert "done" in first["text"], first
    again = _run(alice, "stat -c '%n %u %g' /root/d /root/r", workspace_id=ws)
    assert "/root/d 1000 1000" in again["text"] and "/root/r 0 0" in again["text"], again


def test_init_command_line_shows_nothing_of_the_host(alice: Mags, sec_server: ServerProc) -> None:
    res = _run(alice, "tr '\\0' ' ' < /proc/1/cmdline; echo; cat /proc/1/comm")
    assert str(sec_server.data_dir) not in res["text"] and "/var/lib/mags" not in res["text"], res
    if sec_server.runtime == "namespaces":
        assert res["text"].split() == ["mags-init", "mags-init"], res
