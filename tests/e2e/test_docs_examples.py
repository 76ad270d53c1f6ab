"""The public Mags docs' examples, verbatim, through the real ``mags`` CLI and a real server.

Hosted Mags guests are Alpine and its docs install with ``apk add``; ours are Debian with an
``apk`` that maps onto apt-get (runtime/guest/apk.py).  Each command string below is copied
unchanged from the seed docs in ``/work/shared/seeds`` (the file is named beside it), so a
user's copy-paste works here too.  They install real packages: Debian's archive, PyPI and the
npm registry are the only hosts these tests reach.

Left out on purpose:
* ``mags run 'apk add curl && curl -s https://api.github.com/users/octocat | head -5'``
  (004_d99777282b00a5b8.txt): api.github.com is no package registry, and tests send traffic only
  to this machine and the registries.  ``apk add curl`` alone is covered by the no-op example.
* ``mags run -w my-app 'apk add nodejs npm && mkdir -p /workspace/my-app && ...'``: removed from
  the docs (a ``-`` line in 002_6f7b4d1a156b9320.txt).
* The big installs -- ``apk add ffmpeg imagemagick`` (198 Debian packages, ~430 MB installed),
  ``pip install requests flask pandas`` and ``pip install numpy pandas scikit-learn`` -- are
  marked ``slow`` (run with MAGS_SLOW_TESTS=1).
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.server_fixture import ServerProc

TIMEOUT = 300  # s per CLI call: installs download from the registries


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    """The stdout of a CLI call that must have succeeded."""
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    return proc.stdout


def run(server: ServerProc, *args: str) -> subprocess.CompletedProcess[str]:
    return server.cli("run", *args, timeout=TIMEOUT)


# ------------------------------------------------------------------- the docs, namespaces runtime


def test_workspace_example_installs_requests_and_the_next_run_finds_it(server: ServerProc) -> None:
    # 004_d99777282b00a5b8.txt, "Run with a persistent workspace"
    ok(run(server, "-w", "myproject", "apk add python3 py3-pip && pip install requests"))
    out = ok(run(server, "-w", "myproject", 'python3 -c "import requests; print(requests.__version__)"'))
    assert re.fullmatch(r"\d+\.\d+\.\d+\n", out), out


def test_node_packages_example(server: ServerProc) -> None:
    # 004_d99777282b00a5b8.txt, "Installing Packages"
    out = ok(run(server, "apk add nodejs npm && npm install -g express"))
    assert "OK: " in out and re.search(r"added \d+ packages", out), out


def test_golden_image_then_fork_example(server: ServerProc) -> None:
    # 001_cc18e111e6793bb8.txt and 000_dcdc8bc4e75cc596.txt, "Base images" / "Golden image"
    ok(run(server, "-w", "golden", "-p", "apk add nodejs npm && npm install -g typescript"))
    # Not in the docs: their `npm test` needs a project.  Give the golden one whose test runs
    # the globally installed TypeScript compiler, then follow the docs again.
    ok(server.cli("exec", "golden", "cd /root && npm init -y >/dev/null && npm pkg set scripts.test='tsc --version'"))
    ok(server.cli("sync", "golden", timeout=TIMEOUT))
    out = ok(run(server, "--base", "golden", "-w", "fork-1", "-p", "npm test"))
    assert re.search(r"^Version \d+\.\d+", out, re.MULTILINE), out
    # 000_dcdc8bc4e75cc596.txt: "read-only, changes discarded"
    out = ok(run(server, "--base", "golden", "npm test"))
    assert re.search(r"^Version \d+\.\d+", out, re.MULTILINE), out
    for name in ("fork-1", "golden"):
        ok(server.cli("stop", name, timeout=TIMEOUT))


def test_interactive_development_example(server: ServerProc) -> None:
    # 004_d99777282b00a5b8.txt, "Interactive Development": the docs type the command into
    # `mags ssh dev-env`; exec runs it in the same sandbox without a terminal
    ok(server.cli("new", "dev-env", timeout=TIMEOUT))
    try:
        out = ok(server.cli("exec", "dev-env", "apk add git nodejs npm", timeout=TIMEOUT))
        assert out.startswith("OK: "), out  # all pre-installed: nothing to fetch
    finally:
        server.cli("stop", "dev-env", timeout=TIMEOUT)


# ---------------------------------------------------------------------- apk and apt, beyond the docs


def test_apk_installs_a_debian_package_and_removes_its_virtual_group(server: ServerProc) -> None:
    out = ok(run(server, "apk add --no-cache --virtual .tools jq && jq --version && apk info -e jq "
                         "&& apk del .tools && test ! -e /usr/bin/jq"))  # fmt: skip
    lines = out.splitlines()
    assert any(re.fullmatch(r"\(\d/3\) Installing jq \(1\.6.*\)", ln) for ln in lines), out
    assert "jq-1.6" in lines and "jq" in lines, out  # jq --version, apk info -e jq
    assert any(re.fullmatch(r"\(\d/3\) Removing jq \(.*\)", ln) for ln in lines), out


def test_apk_add_of_an_unknown_package_fails_naming_it(server: ServerProc) -> None:
    proc = run(server, "apk add no-such-package-xyz")
    assert proc.returncode != 0
    assert "ERROR: unable to select packages:" in proc.stderr, proc.stderr
    assert "no-such-package-xyz (no such package)" in proc.stderr, proc.stderr


def test_apt_get_install_works_in_a_fresh_sandbox(server: ServerProc) -> None:
    # the image keeps its package lists: no `apt-get update` needed first
    out = ok(run(server, "apt-get install -y -q tree >/dev/null && tree --version"))
    assert out.startswith("tree v"), out


def test_every_debian_name_in_the_apk_table_exists_in_the_image_lists(server: ServerProc) -> None:
    guest = Path(__file__).resolve().parents[2] / "src" / "mags" / "runtime" / "guest"
    spec = importlib.util.spec_from_file_location("mags_guest_apk_e2e", guest / "apk.py")
    assert spec and spec.loader
    apk = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(apk)  # the guest script, for its table parser
    table = apk.parse_table((guest / "apk-map.txt").read_text())
    names = sorted({
        alt for cols in table.exact.values() for col in cols for alt in col if alt
    })  # fmt: skip
    script = (f"apt-cache policy {' '.join(names)} | "
              "awk '/^[^ ]/ {n=$1} /Candidate:/ && $2 != \"(none)\" {print n}'")  # fmt: skip
    found = {line.rstrip(":") for line in ok(run(server, script)).split()}
    assert sorted(set(names) - found) == []


# ----------------------------------------------------------------------------- the big ones: slow


def test_system_packages_example(server: ServerProc) -> None:
    # 004_d99777282b00a5b8.txt, "Installing Packages" (~200 Debian packages, ~20 s here)
    out = ok(run(server, "apk add ffmpeg imagemagick"))
    assert re.search(r"^\(\d+/\d+\) Installing ffmpeg ", out, re.MULTILINE), out
    assert re.search(r"^\(\d+/\d+\) Installing imagemagick ", out, re.MULTILINE), out


@pytest.mark.slow
def test_python_packages_example(server: ServerProc) -> None:
    # 004_d99777282b00a5b8.txt, "Installing Packages"
    ok(run(server, "apk add python3 py3-pip && pip install requests flask pandas"))


@pytest.mark.slow
def test_ml_workspace_example(server: ServerProc) -> None:
    # 004_d99777282b00a5b8.txt, "Persistent Workspaces"
    ok(run(server, "-w", "ml-project", "apk add python3 py3-pip && pip install numpy pandas scikit-learn"))
    out = ok(run(server, "-w", "ml-project", "python3 -c 'import sklearn, pandas; print(\"ok\")'"))
    assert out == "ok\n"


# ------------------------------------------------------------------------------------------ gVisor


def test_node_packages_example_on_gvisor(gvisor_server: ServerProc) -> None:
    # 004_d99777282b00a5b8.txt, "Installing Packages"
    out = ok(run(gvisor_server, "apk add nodejs npm && npm install -g express"))
    assert re.search(r"added \d+ packages", out), out
    # and a real install through dpkg under gVisor's kernel
    out = ok(run(gvisor_server, "apk add --no-cache jq && jq --version"))
    assert out.splitlines()[-1] == "jq-1.6", out
