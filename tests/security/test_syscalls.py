"""Seccomp and capabilities, on both runtimes: what root inside a sandbox must not be able to do.

Each probe calls the syscall itself (python3's ctypes ``syscall()`` with arguments that would
*succeed*, or fail harmlessly, if the call were permitted) or the shell tool a user would
use.  A probe passes only when the call is refused -- ``EPERM``/``EACCES``, or ``ENOSYS`` /
``EAFNOSUPPORT`` where the runtime pretends the feature does not exist -- never because of
bad arguments.  Where the host can witness the outcome it does: its hostname, sysctls and
``/sys`` knobs, its kernel log, its clock.

gVisor emulates some kernel features inside its sentry (keyrings, nested namespaces, a fake
kernel log): those never reach the host kernel, so they are not refusals to assert there.
"""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mags import Mags
from tests.integration.server_fixture import ServerProc
from tests.security.conftest import Tenants
from tests.security.helpers import guest_json, sandbox

REFUSED = {"EPERM", "EACCES", "ENOSYS"}

PRELUDE = """
import ctypes, errno, os, struct, subprocess
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
C = ctypes.c_char_p
out = {}
def sc(name, nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *args)
    out[name] = "ok" if r >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
    return r
def sh(name, cmd):
    p = subprocess.run(["/bin/sh", "-c", cmd], capture_output=True, text=True)
    out[name] = "ok" if p.returncode == 0 else "failed: " + p.stderr.strip()[-120:]
"""


@pytest.fixture(scope="module")
def box(tenants: Tenants) -> Iterator[str]:
    with (
        tenants.client(tenants.alice_token) as alice,
        sandbox(alice, f"sys-{uuid.uuid4().hex[:6]}") as job_id,
    ):
        yield job_id


def probe(m: Mags, job_id: str, code: str) -> dict[str, str]:
    return guest_json(m, job_id, PRELUDE + code + "\nresult(out)\n")


def refused(outcomes: dict[str, str], allowed: set[str] = REFUSED) -> dict[str, str]:
    """The probes that were *not* refused (should be none)."""
    return {k: v for k, v in outcomes.items() if v not in allowed and not v.startswith("failed")}


# ---------------------------------------------------------------------- mounts, namespaces
def test_mounts_and_new_namespaces_are_refused(alice: Mags, box: str, sec_server: ServerProc) -> None:
    mounts_before = alice.exec(box, "cat /proc/self/mountinfo")["output"]
    out = probe(
        alice,
        box,
        """
sh("mount tmpfs", "mount -t tmpfs none /mnt")
sh("mount --bind", "mount --bind /tmp /mnt")
sh("unshare -m", "unshare -m true")
sh("unshare -U", "unshare -U true")
sh("unshare -Ur", "unshare -Ur true")
sh("unshare -n", "unshare -n true")
sc("mount()", 165, C(b"none"), C(b"/mnt"), C(b"tmpfs"), ctypes.c_ulong(0), None)
sc("pivot_root()", 155, C(b"/tmp"), C(b"/tmp"))
sc("unshare(CLONE_NEWNS)", 272, ctypes.c_int(0x00020000))
sc("setns(own netns)", 308, ctypes.c_int(os.open("/proc/self/ns/net", os.O_RDONLY)), ctypes.c_int(0))
""",
    )
    if sec_server.runtime == "namespaces":
        direct = probe(
            alice,
            box,
            """
for name, flag in (("NEWUSER", 0x10000000), ("NEWNET", 0x40000000), ("NEWPID", 0x20000000), ("NEWUTS", 0x04000000)):
    sc("unshare(CLONE_%s)" % name, 272, ctypes.c_int(flag))
""",
        )
        out.update(direct)
    else:
        # a user namespace (and mounts inside it) made in gVisor is the sentry's, not the host's
        del out["unshare -U"], out["unshare -Ur"]
    assert refused(out) == {}, out
    assert alice.exec(box, "cat /proc/self/mountinfo")["output"] == mounts_before


# ---------------------------------------------------------------------- kernel code
def test_kernel_modules_and_kexec_are_refused(alice: Mags, box: str) -> None:
    # arguments that fail harmlessly (bad flags, no such module) if the call were permitted:
    # EINVAL/ENOENT/EBADF would mean the permission check passed
    out = probe(
        alice,
        box,
        """
buf = ctypes.create_string_buffer(b"\\x7fELF" + b"\\0" * 60)
sc("init_module", 175, buf, ctypes.c_ulong(64), C(b""))
sc("finit_module", 313, ctypes.c_int(-1), C(b""), ctypes.c_int(0))
sc("delete_module", 176, C(b"mags_no_such_module"), ctypes.c_uint(0o4000))
sc("kexec_load", 246, ctypes.c_ulong(0), ctypes.c_ulong(0), None, ctypes.c_ulong(0xFFFF0000))
sc("kexec_file_load", 320, ctypes.c_int(-1), ctypes.c_int(-1), ctypes.c_ulong(0), None, ctypes.c_ulong(0xFFFF0000))
sh("modprobe/insmod", "modprobe loop 2>&1 || insmod /nonexistent.ko")
""",
    )
    assert refused(out) == {}, out


def test_bpf_perf_events_and_kernel_keyrings_are_refused(
    alice: Mags, box: str, sec_server: ServerProc
) -> None:
    # each of these succeeds for an unprivileged host user here (perf_event_paranoid=2 allows
    # self-profiling in user space; keyctl/add_key on the session keyring; a BPF array map
    # needs CAP_BPF only when unprivileged BPF is disabled)
    out = probe(
        alice,
        box,
        """
attr = ctypes.create_string_buffer(struct.pack("IIQQQQQ", 1, 128, 0, 0, 0, 0, (1 << 5) | (1 << 6)).ljust(128, b"\\0"))
sc("perf_event_open(self, sw clock)", 298, attr, ctypes.c_int(0), ctypes.c_int(-1), ctypes.c_int(-1), ctypes.c_ulong(0))
mattr = ctypes.create_string_buffer(struct.pack("IIII", 2, 4, 4, 1).ljust(128, b"\\0"))
sc("bpf(BPF_MAP_CREATE)", 321, ctypes.c_int(0), mattr, ctypes.c_uint(128))
sc("keyctl(GET_KEYRING_ID)", 250, ctypes.c_int(0), ctypes.c_int(-3), ctypes.c_int(1))
sc("add_key", 248, C(b"user"), C(b"mags-probe"), C(b"x"), ctypes.c_size_t(1), ctypes.c_int(-3))
sc("userfaultfd", 323, ctypes.c_int(0))
sc("open_by_handle_at", 304, ctypes.c_int(-100), ctypes.create_string_buffer(64), ctypes.c_int(0))
""",
    )
    if sec_server.runtime == "gvisor":
        # the sentry's own keyring, not the host kernel's
        out.pop("keyctl(GET_KEYRING_ID)")
    assert refused(out, REFUSED | {"ENODEV", "EOPNOTSUPP", "ENOTSUP"}) == {}, out


# ---------------------------------------------------------------------- clock, devices
def test_the_clock_cannot_be_set(alice: Mags, box: str) -> None:
    out = probe(
        alice,
        box,
        """
import time
class TS(ctypes.Structure): _fields_ = [("s", ctypes.c_long), ("ns", ctypes.c_long)]
class TV(ctypes.Structure): _fields_ = [("s", ctypes.c_long), ("us", ctypes.c_long)]
# the time it already is: permitted or not, the host's clock does not move
sc("clock_settime", 227, ctypes.c_int(0), ctypes.byref(TS(int(time.time()), 0)))
sc("settimeofday", 164, ctypes.byref(TV(int(time.time()), 0)), None)
tx = ctypes.create_string_buffer(256); struct.pack_into("I", tx, 0, 0x0001)  # ADJ_OFFSET of 0
sc("adjtimex(ADJ_OFFSET)", 159, tx)
sc("clock_adjtime", 305, ctypes.c_int(0), tx)
sh("date -s", "date -s '@%d'" % int(time.time()))
""",
    )
    assert refused(out) == {}, out


def test_block_and_memory_devices_cannot_be_made_or_read(alice: Mags, box: str) -> None:
    dev = os.stat("/").st_dev  # the host's root filesystem device
    major, minor = os.major(dev), os.minor(dev)
    res = alice.exec(box, " ; ".join([
        f"mknod /tmp/blk b {major} {minor} && head -c 512 /tmp/blk | wc -c",
        "mknod /tmp/sda b 8 0 && head -c 512 /tmp/sda | wc -c",
        "mknod /tmp/mem c 1 1 && head -c 16 /tmp/mem | wc -c",
        "mknod /tmp/kmem c 1 2 && head -c 16 /tmp/kmem | wc -c",
        "ls /dev",
    ]))  # fmt: skip
    counts = [line for line in res["output"].split() if line.isdigit()]
    assert all(c == "0" for c in counts), res  # nothing was read from any of them
    host_like = [
        d
        for d in res["output"].split()
        if d.startswith(("sd", "vd", "nvme", "loop", "mem", "kmem", "kmsg", "port"))
    ]
    assert host_like == [], res


# ---------------------------------------------------------------------- kernel information
def test_kernel_memory_symbols_and_log_are_hidden(alice: Mags, box: str) -> None:
    host_log = subprocess.run(["dmesg"], capture_output=True, text=True, check=False).stdout.splitlines()[
        -20:
    ]
    out = probe(
        alice,
        box,
        """
try:
    with open("/proc/kcore", "rb") as f:
        data = f.read(4096)
    out["kcore"] = "read %d bytes" % len(data) if data else "empty"
except OSError as e:
    out["kcore"] = errno.errorcode.get(e.errno, str(e.errno))
try:
    with open("/proc/kallsyms") as f:
        addrs = {line.split()[0] for line in f if line.strip()}
    out["kallsyms"] = "zeroed" if addrs <= {"0" * 16, "0" * 8} else "addresses: %s" % sorted(addrs)[-1]
except OSError as e:
    out["kallsyms"] = errno.errorcode.get(e.errno, str(e.errno))
p = subprocess.run(["dmesg"], capture_output=True, text=True, check=False)
out["dmesg"] = p.stdout[-20000:]
""",
    )
    assert out["kcore"] in ("ENOENT", "EACCES", "EPERM", "empty"), out["kcore"]
    assert out["kallsyms"] in ("ENOENT", "EACCES", "EPERM", "zeroed"), out["kallsyms"]
    # gVisor prints a fake log of its own; the host's kernel log must never show
    leaked = [line for line in host_log if line and line.split("] ", 1)[-1] in out["dmesg"]]
    assert leaked == [] and "renamed from mg" not in out["dmesg"], leaked or out["dmesg"][-500:]


@pytest.fixture
def host_knobs() -> Iterator[dict[str, str]]:
    """Host values a guest write would change (restored if a probe ever gets through)."""
    paths = [
        "/proc/sys/vm/swappiness",
        "/proc/sys/net/ipv4/ip_forward",
        "/sys/kernel/mm/transparent_hugepage/enabled",
    ]
    before = {p: Path(p).read_text() for p in paths if Path(p).exists()}
    yield before
    for p, v in before.items():
        if Path(p).read_text() != v:
            Path(p).write_text(v.split("[")[1].split("]")[0] if "[" in v else v)


def test_proc_sys_and_sys_are_read_only(
    alice: Mags, box: str, host_knobs: dict[str, str], sec_server: ServerProc
) -> None:
    swappiness = int(host_knobs.get("/proc/sys/vm/swappiness", "60"))
    thp = host_knobs.get("/sys/kernel/mm/transparent_hugepage/enabled", "[madvise]")
    other_thp = next(c for c in ("always", "madvise", "never") if f"[{c}]" not in thp)
    host_name = socket.gethostname()
    out = probe(
        alice,
        box,
        f"""
for path, value in (("/proc/sys/kernel/hostname", "mags-pwned"), ("/proc/sys/vm/swappiness", "{swappiness + 1}"),
                    ("/proc/sys/net/ipv4/ip_forward", "{1 - int(host_knobs["/proc/sys/net/ipv4/ip_forward"])}"),
                    ("/proc/sysrq-trigger", "h"),
                    ("/sys/kernel/mm/transparent_hugepage/enabled", "{other_thp}"),
                    ("/sys/class/net/eth0/mtu", "1400"), ("/sys/mags-probe", "x")):
    try:
        with open(path, "w") as f:
            f.write(value)
        out["write " + path] = "ok"
    except OSError as e:
        out["write " + path] = errno.errorcode.get(e.errno, str(e.errno))
""",
    )
    if sec_server.runtime == "gvisor":
        # gVisor's /proc/sys/net configures the sandbox's own network stack (netstack): the
        # write lands there, and the host's value (checked below) stays as it was
        del out["write /proc/sys/net/ipv4/ip_forward"]
    assert refused(out, REFUSED | {"EROFS", "ENOENT", "EIO"}) == {}, out
    assert {p: Path(p).read_text() for p in host_knobs} == host_knobs
    assert socket.gethostname() == host_name
    after = alice.exec(box, "hostname; cat /sys/class/net/eth0/mtu 2>/dev/null || true")["output"].split()
    assert after[0] == "mags-vm", after


# ---------------------------------------------------------------------- tracing
def test_processes_can_be_debugged_but_the_sandbox_init_cannot(alice: Mags, box: str) -> None:
    # PTRACE_SEIZE (it does not stop the tracee): tracing pid 1, the init that speaks to the
    # host agent, would let a guest freeze its sandbox or forge what the agent is told
    out = probe(
        alice,
        box,
        """
import time
child = subprocess.Popen(["sleep", "30"])
time.sleep(0.2)
sc("ptrace(SEIZE, own child)", 101, ctypes.c_long(0x4206), ctypes.c_long(child.pid), None, None)
child.kill(); child.wait()
sc("ptrace(SEIZE, pid 1)", 101, ctypes.c_long(0x4206), ctypes.c_long(1), None, None)
try:
    with open("/proc/1/mem", "rb") as f:
        out["/proc/1/mem"] = "open"
except OSError as e:
    out["/proc/1/mem"] = errno.errorcode.get(e.errno, str(e.errno))
""",
    )
    assert out.pop("ptrace(SEIZE, own child)") == "ok", out  # strace/gdb work, as in Docker
    assert refused(out) == {}, out
    assert alice.exec(box, "echo still-answering")["output"].strip() == "still-answering"


# ---------------------------------------------------------------------- io_uring, vsock, xdp
def test_io_uring_vsock_and_xdp_are_refused(alice: Mags, box: str) -> None:
    out = probe(
        alice,
        box,
        """
import socket
params = ctypes.create_string_buffer(120)
r = sc("io_uring_setup", 425, ctypes.c_uint(4), params)
if r >= 0:
    os.close(r)
for family, name in ((40, "AF_VSOCK"), (44, "AF_XDP")):
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_RAW):
        try:
            socket.socket(family, kind).close()
            out[name] = "ok"
            break
        except OSError as e:
            out[name] = errno.errorcode.get(e.errno, str(e.errno))
""",
    )
    assert out["io_uring_setup"] in ("ENOSYS", "EPERM"), out
    assert out["AF_VSOCK"] in ("EAFNOSUPPORT", "EPERM", "EACCES"), out
    assert out["AF_XDP"] in ("EAFNOSUPPORT", "EPERM", "EACCES"), out
