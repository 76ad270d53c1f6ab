"""Guest images: versioned root filesystems built with debootstrap, cached outside the repo.

Layout under ``Settings.images_path``::

    <name>/<version>/rootfs/        the root filesystem (overlay lower layer, never written)
    <name>/<version>/image.json     recipe, build time, environment for processes
    <name>/current -> <version>     what new sandboxes use

``version`` is a hash of the recipe (packages, suite, mirror, extra CA certificates, the guest
files below, build steps), so an image is rebuilt only when its recipe changes, and a running
sandbox keeps the version it started on (old versions stay until no sandbox uses them).

Guest files (``runtime/guest/``): ``apk.py`` and its name table ``apk-map.txt`` become the
guest's ``apk`` (Alpine's package commands carried out by apt-get), because hosted Mags guests
are Alpine and its docs install everything with ``apk add``.  The image keeps apt's package
lists (compressed, ~19 MB) so ``apt-get install`` works in a fresh sandbox; ``apk`` refreshes
them when they are a day old.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from mags.config import Settings
from mags.errors import ImageError, ValidationError

BUILD_STEPS_VERSION = 7
DEFAULT_MIRROR = "http://deb.debian.org/debian"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
GUEST_DIR = Path(__file__).resolve().parent / "guest"
GUEST_APK = "usr/local/lib/mags/apk"  # apk.py + apk-map.txt; /usr/local/bin/apk and /sbin/apk link here
GUEST_APK_FILES = ("apk.py", "apk-map.txt")
UPDATE_STAMP = "/var/lib/apt/periodic/update-success-stamp"

# /etc/apt/apt.conf.d/90mags, in place before the image's `apt-get update`.  As in Debian's
# container images: package lists kept compressed and without translations (~19 MB instead of
# ~80 MB); no binary caches on disk (apt rebuilds them in memory, ~1 s a run, instead of ~70 MB
# copied up into every sandbox that installs a package and synced with its workspace); no
# downloaded .debs kept.  A successful update touches the stamp `apk` reads the lists' age from.
APT_CONF = f"""\
// mags guest image (mags/runtime/image.py)
Acquire::Languages "none";
Acquire::GzipIndexes "true";
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT::Keep-Downloaded-Packages "false";
DPkg::Post-Invoke {{ "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; }};
APT::Update::Post-Invoke-Success {{ "mkdir -p {os.path.dirname(UPDATE_STAMP)} && touch {UPDATE_STAMP} || true"; }};
"""

# Maintainer scripts must not start daemons (`apk add redis` on Alpine starts nothing either;
# a started one would outlive the install in the sandbox): invoke-rc.d asks this first.
POLICY_RC_D = "#!/bin/sh\n# mags: no service starts from package installs (see invoke-rc.d(8))\nexit 101\n"


@dataclass(frozen=True)
class Recipe:
    name: str
    suite: str
    base: tuple[str, ...]  # installed by debootstrap itself
    packages: tuple[str, ...]  # installed with apt-get in the new root
    env: dict[str, str] = field(default_factory=dict)


RECIPES: dict[str, Recipe] = {
    "standard": Recipe(
        name="standard",
        suite="bookworm",
        base=("ca-certificates", "python3"),
        packages=(
            "python3-pip", "python3-venv", "nodejs", "npm", "curl", "wget", "git", "vim", "nano",
            "procps", "iproute2", "iputils-ping", "less", "bash", "openssh-client", "openssh-sftp-server", "xz-utils",
            "unzip", "file", "sqlite3",
        ),
        env={
            # tools that carry their own CA bundle must trust the image's (which includes the
            # host's extra CAs, e.g. a corporate TLS proxy)
            "SSL_CERT_FILE": CA_BUNDLE,
            "REQUESTS_CA_BUNDLE": CA_BUNDLE,
            "NODE_EXTRA_CA_CERTS": CA_BUNDLE,
            "PIP_BREAK_SYSTEM_PACKAGES": "1",
            # pip as root is the sandbox's normal case (as on Mags): no warning on every install
            "PIP_ROOT_USER_ACTION": "ignore",
        },
    ),
}


@dataclass(frozen=True)
class Image:
    name: str
    version: str
    path: Path  # the version dir

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"

    @cached_property
    def shell(self) -> str:
        """The shell scripts run with: bash when the image has it (as on Mags), else sh."""
        return "/bin/bash" if (self.rootfs / "bin" / "bash").exists() else "/bin/sh"

    @cached_property
    def env(self) -> dict[str, str]:
        try:
            meta = json.loads((self.path / "image.json").read_text())
        except (OSError, ValueError):
            return {}
        return dict(meta.get("env", {}))


def _extra_cas(settings: Settings) -> list[Path]:
    d = settings.extra_ca_dir
    if not d.is_dir():
        return []
    return sorted(p for p in d.rglob("*.crt") if p.is_file())


def recipe_version(settings: Settings, recipe: Recipe, mirror: str) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([BUILD_STEPS_VERSION, recipe.suite, recipe.base, recipe.packages, recipe.env, mirror]).encode())
    for name in GUEST_APK_FILES:
        h.update(name.encode())
        h.update((GUEST_DIR / name).read_bytes())
    for ca in _extra_cas(settings):
        h.update(ca.name.encode())
        h.update(ca.read_bytes())
    return h.hexdigest()[:12]


def _mirror() -> str:
    return os.environ.get("MAGS_DEBIAN_MIRROR", DEFAULT_MIRROR)


def get_recipe(name: str) -> Recipe:
    recipe = RECIPES.get(name)
    if recipe is None:
        raise ValidationError(f"unknown image {name!r} (known: {', '.join(sorted(RECIPES))})")
    return recipe


def resolve_image(settings: Settings, name: str = "standard") -> Image:
    """The current built version of image ``name``; ImageError if it was never built."""
    get_recipe(name)
    current = settings.images_path / name / "current"
    try:
        version = os.readlink(current)
    except OSError:
        raise ImageError(f"image {name!r} is not built yet: run `mags image build`") from None
    path = settings.images_path / name / version
    if not (path / "rootfs" / "bin").exists():
        raise ImageError(f"image {name!r} version {version} is incomplete: run `mags image build --force`")
    return Image(name, version, path)


def image_is_current(settings: Settings, name: str = "standard") -> bool:
    try:
        img = resolve_image(settings, name)
    except ImageError:
        return False
    return img.version == recipe_version(settings, get_recipe(name), _mirror())


def _run(cmd: list[str], log: Callable[[str], None], env: dict[str, str] | None = None) -> None:
    log("$ " + " ".join(cmd[:6]) + (" ..." if len(cmd) > 6 else ""))
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
        raise ImageError(f"image build step failed ({cmd[0]}):\n" + "\n".join(tail))


def build_image(
    settings: Settings, name: str = "standard", force: bool = False, log: Callable[[str], None] | None = None
) -> Image:
    """Build image ``name`` unless its current version already matches the recipe."""
    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    recipe = get_recipe(name)
    if os.geteuid() != 0:
        raise ImageError("building an image needs root (debootstrap, chroot)")
    if shutil.which("debootstrap") is None:
        raise ImageError("debootstrap is not installed (apt-get install debootstrap)")
    mirror = _mirror()
    version = recipe_version(settings, recipe, mirror)
    base = settings.images_path / name
    base.mkdir(parents=True, exist_ok=True)
    lock_fd = os.open(base / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        final = base / version
        if final.exists() and not force and (final / "image.json").exists():
            _set_current(base, version)
            say(f"image {name} {version} is up to date")
            return Image(name, version, final)
        started = time.monotonic()
        work = base / f".build-{version}"
        if work.exists():
            shutil.rmtree(work)
        work.mkdir()
        rootfs = work / "rootfs"
        say(f"building image {name} {version} (debootstrap {recipe.suite}, about 1-2 minutes)")
        _run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(recipe.base)}", recipe.suite, str(rootfs), mirror],
            say,
        )
        _install_packages(settings, recipe, rootfs, say)
        _finish_rootfs(rootfs)
        meta = {
            "name": name,
            "version": version,
            "suite": recipe.suite,
            "packages": list(recipe.base + recipe.packages),
            "env": recipe.env,
            "mirror": mirror,
            "built_at": time.time(),
            "build_seconds": round(time.monotonic() - started, 1),
        }
        (work / "image.json").write_text(json.dumps(meta, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.rename(work, final)
        _set_current(base, version)
        say(f"image {name} {version} built in {meta['build_seconds']} s")
        return Image(name, version, final)
    finally:
        os.close(lock_fd)


def _install_packages(settings: Settings, recipe: Recipe, rootfs: Path, say: Callable[[str], None]) -> None:
    shutil.copy("/etc/resolv.conf", rootfs / "etc" / "resolv.conf")
    cas = _extra_cas(settings)
    if cas:
        dest = rootfs / "usr" / "local" / "share" / "ca-certificates" / "mags-host"
        dest.mkdir(parents=True, exist_ok=True)
        for ca in cas:
            shutil.copy(ca, dest / ca.name)
    (rootfs / "etc" / "apt" / "apt.conf.d" / "90mags").write_text(APT_CONF)
    # The package lists stay in the image: `apt-get install X` must work in a fresh sandbox.
    # debootstrap leaves an uncompressed Packages file (50 MB) that `apt-get update` would keep.
    script = (
        "set -e; export DEBIAN_FRONTEND=noninteractive; mount -t proc proc /proc; "
        "update-ca-certificates >/dev/null; rm -rf /var/lib/apt/lists/*; apt-get update -q; "
        f"apt-get install -y -q --no-install-recommends {' '.join(recipe.packages)}; "
        "apt-get clean; umount /proc"
    )
    say(f"installing {len(recipe.packages)} packages into the image")
    _run(["unshare", "--mount", "--pid", "--fork", "chroot", str(rootfs), "/bin/sh", "-c", script], say,
         env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"})


def _drop_file_capabilities(rootfs: Path) -> int:
    """Remove ``security.capability`` from every file of the image; returns how many had it.

    Sandboxes run without some capabilities in their bounding set (CAP_NET_RAW), and the
    kernel refuses to exec a binary whose file capabilities ask for one of those (EPERM):
    Debian's ``ping`` is ``cap_net_raw+ep``.  Without them ping uses an ICMP datagram socket
    (allowed per sandbox network namespace), and root needs no file capabilities anyway.
    """
    count = 0
    for dirpath, dirnames, filenames in os.walk(rootfs):
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                os.removexattr(path, "security.capability", follow_symlinks=False)
                count += 1
            except OSError:
                continue  # no such attribute (the usual case), or a symlink
    return count


def _install_apk(rootfs: Path) -> None:
    """The guest's ``apk``: apk.py and its name table, linked as /usr/local/bin/apk and /sbin/apk."""
    dest = rootfs / GUEST_APK
    dest.mkdir(parents=True, exist_ok=True)
    for name in GUEST_APK_FILES:
        shutil.copyfile(GUEST_DIR / name, dest / name)
        os.chmod(dest / name, 0o755 if name.endswith(".py") else 0o644)
    # relative links: they resolve the same inside the sandbox and when the image is inspected
    for link, target in (("usr/local/bin/apk", "../lib/mags/apk/apk.py"), ("usr/sbin/apk", "../local/bin/apk")):
        path = rootfs / link
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.exists():
            path.unlink()
        os.symlink(target, path)


def _finish_rootfs(rootfs: Path) -> None:
    _drop_file_capabilities(rootfs)
    _install_apk(rootfs)
    policy = rootfs / "usr" / "sbin" / "policy-rc.d"
    policy.write_text(POLICY_RC_D)
    os.chmod(policy, 0o755)
    (rootfs / "etc" / "hostname").write_text("mags-vm\n")
    (rootfs / "etc" / "hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\tmags-vm\n::1\tlocalhost ip6-localhost\n")
    (rootfs / "etc" / "resolv.conf").write_text("")  # bind-mounted per sandbox
    for d in ("root", ".mags", "uploads", "jfs", "tmp"):
        (rootfs / d).mkdir(exist_ok=True)
    os.chmod(rootfs / "tmp", 0o1777)
    os.chmod(rootfs / "root", 0o700)


def _set_current(base: Path, version: str) -> None:
    tmp = base / f".current-{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(version, tmp)
    os.replace(tmp, base / "current")
