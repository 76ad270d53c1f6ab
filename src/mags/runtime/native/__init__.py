"""Build and locate the static ``mags-sandbox`` binary (launcher + in-sandbox init).

The binary is compiled from the C sources shipped in this package the first time it is needed
and cached by source hash, so an upgrade of mags rebuilds it and a running sandbox keeps the
file it started with.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from mags.errors import RuntimeUnavailable

SOURCES = ("mags_sandbox.c", "launch.c", "harden.c", "sandbox.h", "protocol.h")
C_FILES = tuple(name for name in SOURCES if name.endswith(".c"))
_HERE = Path(__file__).parent


def source_hash() -> str:
    h = hashlib.sha256()
    for name in SOURCES:
        h.update((_HERE / name).read_bytes())
    return h.hexdigest()[:16]


def binary_path(cache_dir: Path) -> Path:
    return cache_dir / f"mags-sandbox-{source_hash()}"


def ensure_binary(cache_dir: Path) -> Path:
    """Return the path of a compiled ``mags-sandbox`` for the current sources, building it if needed."""
    target = binary_path(cache_dir)
    if target.exists():
        return target
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise RuntimeUnavailable("cannot build mags-sandbox: no C compiler (apt-get install gcc libc6-dev)")
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".mags-sandbox-", dir=cache_dir)
    os.close(fd)
    cmd = [cc, "-static", "-O2", "-Wall", "-o", tmp, *(str(_HERE / name) for name in C_FILES)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        os.unlink(tmp)
        raise RuntimeUnavailable(f"cannot build mags-sandbox: {proc.stderr.strip()[-2000:]}")
    os.chmod(tmp, 0o755)
    os.replace(tmp, target)
    return target
