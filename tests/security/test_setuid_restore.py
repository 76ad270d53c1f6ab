"""A base workspace cannot plant a setuid (or file-capability) program on the host.

Red-team repro: a tenant makes ``/suidbash`` (setuid root) in a persistent workspace, stops it,
then runs ``--base`` on it; the agent restores the base snapshot as a read-only layer.  That
layer used to land on the host's root filesystem (not ``nosuid``) with its setuid bit, so any
local user could run it and be root.  Now layers live on the layer-cache disk, mounted
``nosuid,nodev`` inside the server's private mount namespace, and are restored with setuid/
setgid bits and ``security.*`` xattrs stripped.

Oracles are on the host: the files' modes and xattrs (read through ``/proc/<server>/root``,
which reaches the server's mount namespace), the mount options in the server's mountinfo,
and executing the layer's copy as ``nobody`` -- through an open file descriptor, so the
kernel's verdict is about the file and its mount, not about search permission on the test's
0700 temp dirs -- with a control binary showing that the probe does see a working setuid file.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

from mags import Mags
from tests.security.conftest import Tenants

SETID = stat.S_ISUID | stat.S_ISGID
CAP_XATTR = "security.capability"
# cap_setuid+ep (VFS_CAP_REVISION_2, effective): what `setcap cap_setuid+ep` writes
PLANT = r"""
set -e
cp /bin/bash /suidbash && chmod 4755 /suidbash
cp /bin/bash /sgidbash && chmod 2755 /sgidbash
cp /bin/true /capfile
python3 - <<'EOF'
import os, struct
try:
    os.setxattr("/capfile", "security.capability", struct.pack("<IIIII", 0x02000001, 1 << 7, 0, 0, 0))
    print("caps: set")
except OSError as exc:
    print("caps: unsupported", exc)
EOF
stat -c '%a %n' /suidbash /sgidbash
"""


def run_ok(m: Mags, script: str, **opts: object) -> str:
    """Run a script to its end and wait until its VM is gone (the next run on the workspace may start)."""
    r = m.run_and_wait(script, timeout=300, **opts)
    text = "\n".join(line["message"] for line in r["logs"] if line["source"] != "system")
    assert r["status"] == "completed" and r["exit_code"] == 0, (r["status"], r["exit_code"], r["logs"][-10:])
    if not opts.get("persistent"):
        deadline = time.monotonic() + 60
        while m.status(r["request_id"])["vm_status"] != "stopped":
            assert time.monotonic() < deadline, "the job's VM did not stop"
            time.sleep(0.05)
    return text


def server_root(tenants: Tenants) -> Path:
    """The host's view of the server's mount namespace."""
    assert tenants.server.proc is not None
    return Path(f"/proc/{tenants.server.proc.pid}/root")


def in_server_ns(tenants: Tenants, path: Path) -> Path:
    return server_root(tenants) / str(path).lstrip("/")


def mount_options(tenants: Tenants, target: Path) -> set[str]:
    """Per-mount options of the mount at ``target`` in the server's mount namespace."""
    assert tenants.server.proc is not None
    for line in Path(f"/proc/{tenants.server.proc.pid}/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == str(target):
            return set(fields[5].split(","))
    raise AssertionError(f"{target} is not a mount point in the server's mount namespace")


def euid_as_nobody(path: Path) -> str:
    """``id -u`` printed by ``path`` (a bash) run as nobody with ``-p`` (keeps a setuid euid)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        proc = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", f"/proc/self/fd/{fd}",
             "-p", "-c", "id -u"],
            capture_output=True, text=True, timeout=30, pass_fds=(fd,), check=False,
        )  # fmt: skip
    finally:
        os.close(fd)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def privileged_files(top: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                continue
            if st.st_mode & SETID or CAP_XATTR in os.listxattr(p):
                out.append(p)
    return out


@pytest.fixture(scope="module")
def planted(tenants: Tenants) -> str:
    """Alice's golden workspace with setuid/setgid/capability files, stopped, then used as a base."""
    with tenants.client(tenants.alice_token) as alice:
        out = run_ok(alice, PLANT, workspace_id="gold", persistent=True)
        assert "4755 /suidbash" in out and "2755 /sgidbash" in out
        alice.stop("gold")
        # the layer is restored now; inside, the base's setuid file is plain data
        assert run_ok(alice, "stat -c %a /suidbash", base_workspace_id="gold").strip() == "755"
    return out


def test_restored_layers_hold_no_setuid_or_capability_files(tenants: Tenants, planted: str) -> None:
    data = tenants.server.data_dir
    layers = data / "layers"
    # the host's own view: the cache disk image and an empty mount point, nothing else
    assert sorted(os.listdir(layers)) == ["disk.img", "mnt"]
    assert os.listdir(layers / "mnt") == []
    assert stat.S_IMODE(os.stat(layers / "disk.img").st_mode) == 0o600
    assert privileged_files(layers) == []
    # inside the server's mount namespace: the restored layer, stripped
    mnt = in_server_ns(tenants, layers / "mnt")
    copies = sorted(mnt.glob("u*-gold/*/upper/suidbash"))
    assert copies, f"no restored layer of gold under {mnt}: {list(mnt.glob('*/*'))}"
    for copy in copies:
        upper = copy.parent
        assert stat.S_IMODE(os.lstat(copy).st_mode) == 0o755
        assert stat.S_IMODE(os.lstat(upper / "sgidbash").st_mode) == 0o755
    assert privileged_files(mnt) == []
    # nothing anywhere else in the data dir either (old layout, caches)
    assert [p for p in privileged_files(data) if "/workspaces/" not in p and "/objects/" not in p] == []


def test_layer_disk_is_nosuid_nodev_and_its_copy_does_not_run_as_root(
    tenants: Tenants, planted: str, tmp_path: Path
) -> None:
    layers = tenants.server.data_dir / "layers"
    opts = mount_options(tenants, layers / "mnt")
    assert {"nosuid", "nodev"} <= opts, opts
    # control: the probe sees a working setuid root bash on a filesystem that allows it
    control = tmp_path / "control-suid"
    shutil.copy("/bin/bash", control)
    os.chmod(control, 0o4755)
    assert euid_as_nobody(control) == "0", "the setuid probe does not work on this host"
    # the mount itself defeats setuid: a root-made setuid bash on the layer disk stays nobody
    probe = in_server_ns(tenants, layers / "mnt" / "probe-suid")
    shutil.copy("/bin/bash", probe)
    os.chmod(probe, 0o4755)
    try:
        assert euid_as_nobody(probe) == "65534"
    finally:
        probe.unlink()
    # and the tenant's planted copy (stripped, on a nosuid disk)
    for copy in in_server_ns(tenants, layers / "mnt").glob("u*-gold/*/upper/suidbash"):
        assert euid_as_nobody(copy) == "65534"


def test_forks_see_the_base_content_and_the_workspace_keeps_its_bits(tenants: Tenants, planted: str) -> None:
    with tenants.client(tenants.alice_token) as alice:
        # a fork of gold: the file is there, byte for byte (as plain data: bits stripped)
        out = run_ok(alice, "cmp /suidbash /bin/bash && echo same; stat -c %a /suidbash",
                     workspace_id="fork", base_workspace_id="gold")  # fmt: skip
        assert out.split() == ["same", "755"]
        # gold's own upper is restored exactly: its setuid file keeps its bits inside the sandbox
        # (the overlay's mount flags count there, not the nosuid of the disk below); whether it
        # elevates is the runtime's call -- no_new_privs keeps it from doing so, as before
        out = run_ok(alice, "stat -c %a /suidbash /sgidbash; cmp /suidbash /bin/bash && echo same",
                     workspace_id="gold")  # fmt: skip
        assert out.split() == ["4755", "2755", "same"]


def test_file_capabilities_stay_in_the_workspace_and_off_the_layer(tenants: Tenants, planted: str) -> None:
    if "caps: set" not in planted:
        reason = next(line for line in planted.splitlines() if line.startswith("caps:"))
        pytest.skip(f"the guest cannot set security.capability in this runtime ({reason})")
    with tenants.client(tenants.alice_token) as alice:
        out = run_ok(alice, "python3 -c \"import os; print(len(os.getxattr('/capfile', "
                            "'security.capability')))\"", workspace_id="gold")  # fmt: skip
        assert out.strip() in ("20", "24")  # v2, or v3 with a rootid under a user namespace
    copies = list(in_server_ns(tenants, tenants.server.data_dir / "layers" / "mnt").glob("u*-gold/*/upper/capfile"))
    assert copies
    for copy in copies:
        assert CAP_XATTR not in os.listxattr(copy)


def test_workspace_disks_are_mounted_nosuid_nodev(tenants: Tenants, planted: str) -> None:
    with tenants.client(tenants.alice_token) as alice:
        job = alice.new("probe")  # a sandbox that stays up: its workspace disk stays mounted
        try:
            disks = tenants.server.data_dir / "workspaces"
            mounted = [d for d in disks.iterdir() if d.name.endswith("-probe")]
            assert len(mounted) == 1
            assert {"nosuid", "nodev"} <= mount_options(tenants, mounted[0] / "mnt")
            # ephemeral sandboxes' own scratch disks too
            assert tenants.server.proc is not None
            info = Path(f"/proc/{tenants.server.proc.pid}/mountinfo").read_text().splitlines()
            scratch = [line.split() for line in info if "/run/sb/" in line and "/scratch/mnt " in line]
            assert scratch, "no scratch disk mounted (the warm pool keeps one)"
            assert all({"nosuid", "nodev"} <= set(f[5].split(",")) for f in scratch)
        finally:
            alice.stop(job["request_id"])
