"""The guest's ``apk`` (runtime/guest/apk.py): its name table, its command line, and what it
asks apt to do -- run against fake ``apt-get``/``apt-cache``/``dpkg-query`` that keep their
state in a JSON file, so nothing here needs the guest image or the network."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

GUEST = Path(__file__).resolve().parents[3] / "src" / "mags" / "runtime" / "guest"
APK = GUEST / "apk.py"


def _load_apk():
    spec = importlib.util.spec_from_file_location("mags_guest_apk", APK)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


apk = _load_apk()
TABLE = apk.parse_table((GUEST / "apk-map.txt").read_text())


def debian(name: str) -> list[list[str | None]]:
    return TABLE.lookup(name)


# ------------------------------------------------------------------------------------- table


def test_table_covers_the_common_alpine_packages() -> None:
    assert len(TABLE.exact) >= 300
    expected = {
        "py3-pip": [["python3-pip"]], "py3-requests": [["python3-requests"]], "py3-pillow": [["python3-pil"]],
        "nodejs": [["nodejs"]], "npm": [["npm"]], "build-base": [["build-essential"]],
        "chromium": [["chromium"]], "ffmpeg": [["ffmpeg"]], "imagemagick": [["imagemagick"]],
        "openssh-client": [["openssh-client"]], "openssh": [["openssh-client"], ["openssh-server"]],
        "postgresql-client": [["postgresql-client"]], "libffi-dev": [["libffi-dev"]],
        "openssl-dev": [["libssl-dev"]], "musl-dev": [["libc6-dev"]], "linux-headers": [["linux-libc-dev"]],
        "g++": [["g++"]], "sqlite": [["sqlite3"]], "redis": [["redis-server"]], "go": [["golang-go"]],
        "rust": [["rustc"]], "cargo": [["cargo"]], "openjdk17": [["openjdk-17-jdk-headless"]],
        "docker": [["docker.io"]], "xz": [["xz-utils"]], "bind-tools": [["bind9-dnsutils"]],
        "zlib-dev": [["zlib1g-dev"]], "perl-json": [["libjson-perl"]], "php82-curl": [["php8.2-curl"]],
        "musl": [[None]], "nginx-openrc": [[None]], "foo-dev": [["foo-dev", "libfoo-dev"]],
        "jq": [["jq"]], "some-name-debian-has": [["some-name-debian-has"]],
    }  # fmt: skip
    assert {name: debian(name) for name in expected} == expected


def test_exact_names_win_over_patterns_and_patterns_go_in_order() -> None:
    table = apk.parse_table("py3-odd  python3-even\npy3-*  python3-*\n*-dev  lib*-dev|-\n")
    assert table.lookup("py3-odd") == [["python3-even"]]
    assert table.lookup("py3-x-dev") == [["python3-x-dev"]]
    assert table.lookup("bar-dev") == [["libbar-dev", None]]
    assert table.lookup("py3-") == [["py3-"]]  # a pattern's '*' matches at least one character


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("jq\n", "maps to nothing"),
        ("jq jq\njq jq\n", "appears twice"),
        ("jq lib*\n", "no pattern"),
        ("*-*-x a\n", "bad Alpine name"),
        ("jq j!q\n", "bad Debian name"),
    ],
)
def test_table_mistakes_name_their_line(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=rf"line \d+: .*{error}"):
        apk.parse_table(text)


def test_table_file_has_one_entry_per_line_and_no_redundant_pattern_copies() -> None:
    redundant = [
        name for name, cols in TABLE.exact.items()
        if name.startswith("py3-") and cols == [[f"python3-{name[4:]}"]]
    ]  # fmt: skip
    assert redundant == []


# ------------------------------------------------------------------------------ command line


@pytest.mark.parametrize(
    ("spec", "name", "ignored"),
    [("jq", "jq", ""), ("python3=3.11.6-r0", "python3", "=3.11.6-r0"), ("nodejs>18", "nodejs", ">18"),
     ("py3-foo>=1.2", "py3-foo", ">=1.2"), ("curl@edge", "curl", "@edge"), ("g++~12", "g++", "~12")],
)  # fmt: skip
def test_version_constraints_and_tags_are_split_off(spec: str, name: str, ignored: str) -> None:
    assert apk.split_spec(spec) == (name, ignored)


def test_options_before_and_after_the_applet() -> None:
    a = apk.parse_args(["add", "--no-cache", "--virtual", ".build-deps", "gcc", "musl-dev"])
    assert (a.applet, a.operands, a.opts["virtual"]) == ("add", ["gcc", "musl-dev"], [".build-deps"])
    a = apk.parse_args(["-qU", "add", "-y", "--no-progress", "-t.deps", "jq"])
    assert a.applet == "add" and a.operands == ["jq"] and a.quiet and a.has("update-cache")
    assert a.opts["virtual"] == [".deps"] and not a.warnings
    a = apk.parse_args(["--update", "add", "--virtual=.x", "--quiet", "curl"])
    assert a.has("update-cache") and a.opts["virtual"] == [".x"] and a.quiet
    a = apk.parse_args(["info", "-e", "jq"])  # -e means --installed for info only
    assert a.has("installed")
    a = apk.parse_args(["add", "--frobnicate", "-Z", "jq"])
    assert a.operands == ["jq"] and len(a.warnings) == 2


# ---------------------------------------------------------------------- behaviour, fake apt

FAKE_APT = r'''
import json, os, sys
state_path = os.environ["FAKE_APT_STATE"]
st = json.load(open(state_path))
tool = os.path.basename(sys.argv[0])
argv = [a for a in sys.argv[1:] if a != "--"]
st["calls"].append([tool] + argv)
def save():
    json.dump(st, open(state_path, "w"))
def opts(args):
    out, skip = [], False
    for a in args:
        if skip: skip = False; continue
        if a == "-o": skip = True; continue
        out.append(a)
    return out
if tool == "dpkg-query":
    fmt, names = argv[2], argv[3:]
    names = names or sorted(st["installed"])
    for n in names:
        if n in st["installed"]:
            v = st["available"].get(n, {}).get("version", "1.0")
            sys.stdout.write(fmt.replace("${Package}", n).replace("${db:Status-Abbrev}", "ii ")
                .replace("${Version}", v).replace("${Installed-Size}", "2048").replace("\\t", "\t").replace("\\n", "\n"))
    save(); sys.exit(0 if all(n in st["installed"] for n in names) else 1)
if tool == "apt-mark":
    print("\n".join(p for p in st["installed"] if p not in st["auto"]))
    save(); sys.exit(0)
if tool == "apt-cache":
    if argv[0] == "policy":
        for n in argv[1:]:
            if n in st["available"]:
                print(f"{n}:\n  Installed: (none)\n  Candidate: {st['available'][n]['version']}")
    elif argv[0] == "stats":
        print(f"Total package names: 9\nNormal packages: {len(st['available'])}")
    save(); sys.exit(0)
# apt-get
args = opts(argv)
cmd = args[0]
if cmd == "update":
    if st.get("update_fails"):
        print("E: Failed to fetch http://deb.debian.org/debian/dists/bookworm/InRelease"); save(); sys.exit(100)
    lists = os.environ["MAGS_APK_ROOT"] + "/var/lib/apt/lists"
    os.makedirs(lists, exist_ok=True)
    open(lists + "/deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages.lz4", "w").close()
    st["stale"] = False
    print("Hit:1 http://deb.debian.org/debian bookworm InRelease")
    save(); sys.exit(0)
names = [a for a in args[1:] if not a.startswith("-")]
if cmd == "install":
    missing = [n for n in names if n not in st["available"]]
    if missing:
        for n in missing: print(f"E: Unable to locate package {n}")
        save(); sys.exit(100)
    new = []
    for n in names:
        for p in st["available"][n].get("deps", []) + [n]:
            if p not in st["installed"] and p not in new: new.append(p)
    print(f"0 upgraded, {len(new)} newly installed, 0 to remove and 0 not upgraded.")
    if st.get("stale"):
        print(f"E: Failed to fetch http://deb.debian.org/debian/pool/main/{new[0]}.deb  404  Not Found")
        save(); sys.exit(100)
    for p in new:
        v = st["available"][p]["version"]
        print(f"Selecting previously unselected package {p}.\nUnpacking {p} ({v}) ...")
    for p in new:
        print(f"Setting up {p} ({st['available'][p]['version']}) ...")
        st["installed"].append(p)
        if p not in names: st["auto"].append(p)
    save(); sys.exit(0)
if cmd in ("remove", "purge"):
    gone = [n for n in names if n in st["installed"]]
    grew = True
    while grew:  # what depends on a removed package goes too, as with apt-get
        more = [p for p in st["installed"] if p not in gone
                and any(d in gone for d in st["available"].get(p, {}).get("deps", []))]
        gone += more
        grew = bool(more)
    gone += [p for p in st["auto"] if p in st["installed"] and p not in gone]
    if "-s" in args:
        for p in gone: print(f"Remv {p} [{st['available'][p]['version']}]")
        save(); sys.exit(0)
    print(f"0 upgraded, 0 newly installed, {len(gone)} to remove and 0 not upgraded.")
    for p in gone:
        print(f"Removing {p} ({st['available'][p]['version']}) ...")
        st["installed"].remove(p)
    st["auto"] = [p for p in st["auto"] if p in st["installed"]]
    save(); sys.exit(0)
print("E: fake apt-get: unexpected " + " ".join(args)); save(); sys.exit(100)
'''


class FakeApt:
    """A guest root (lists, stamp, virtual records) plus fake apt tools on PATH."""

    def __init__(self, tmp: Path) -> None:
        self.root = tmp / "root"
        self.state = tmp / "state.json"
        bindir = tmp / "bin"
        bindir.mkdir()
        script = bindir / "fake_apt.py"
        script.write_text(f"#!{sys.executable}\n" + FAKE_APT)
        script.chmod(0o755)
        for tool in ("apt-get", "apt-cache", "apt-mark", "dpkg-query"):
            (bindir / tool).symlink_to(script)
        self.env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "MAGS_APK_ROOT": str(self.root),
                    "FAKE_APT_STATE": str(self.state)}  # fmt: skip
        self.write(
            installed=["bash", "python3", "python3-pip", "nodejs", "npm", "curl", "git"],
            available={
                "jq": {"version": "1.6-2.1", "deps": ["libjq1", "libonig5"]}, "libjq1": {"version": "1.6-2.1"},
                "libonig5": {"version": "6.9.8-1"}, "libfoo-dev": {"version": "2.0"},
                "libc6-dev": {"version": "2.36-9"}, "gcc": {"version": "12.2"},
                **{n: {"version": "1.0"} for n in ("bash", "python3", "python3-pip", "nodejs", "npm", "curl", "git")},
            },
            auto=[], calls=[],
        )  # fmt: skip

    def write(self, **state: object) -> None:
        current = json.loads(self.state.read_text()) if self.state.exists() else {}
        current.update(state)
        self.state.write_text(json.dumps(current))

    def read(self) -> dict:
        return json.loads(self.state.read_text())

    def fresh_lists(self, age_s: float = 0) -> None:
        lists = self.root / "var/lib/apt/lists"
        lists.mkdir(parents=True, exist_ok=True)
        (lists / "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages.lz4").touch()
        stamp = self.root / "var/lib/apt/periodic/update-success-stamp"
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.touch()
        os.utime(stamp, (time.time() - age_s, time.time() - age_s))

    def apk(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        self.write(calls=[])
        return subprocess.run([sys.executable, str(APK), *args], check=False, capture_output=True, text=True,
                              env={**self.env, **env}, timeout=30)  # fmt: skip

    def apt_calls(self) -> list[list[str]]:
        return [[a for a in c if not a.startswith(("-o", "Dpkg::", "DPkg::", "APT::"))]
                for c in self.read()["calls"] if c[0] not in ("dpkg-query", "apt-mark")]  # fmt: skip


@pytest.fixture
def fake(tmp_path: Path) -> FakeApt:
    return FakeApt(tmp_path)


def test_installed_packages_are_a_no_op_without_apt(fake: FakeApt) -> None:
    r = fake.apk("add", "python3", "py3-pip", "nodejs", "npm", "bash", "musl", "libc6-compat")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "OK: 14 MiB in 7 packages\n"
    assert fake.apt_calls() == []  # not even a list refresh: the lists are missing here


def test_missing_lists_are_fetched_quietly_then_one_line_per_package(fake: FakeApt) -> None:
    r = fake.apk("add", "--no-cache", "jq")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "(1/3) Installing libjq1 (1.6-2.1)", "(2/3) Installing libonig5 (6.9.8-1)",
        "(3/3) Installing jq (1.6-2.1)", "OK: 20 MiB in 10 packages",
    ]  # fmt: skip
    assert [c[:2] for c in fake.apt_calls()] == [["apt-get", "update"], ["apt-get", "install"]]
    assert fake.apt_calls()[1][-1] == "jq" and "--no-install-recommends" in fake.apt_calls()[1]


def test_lists_are_refreshed_only_when_a_day_old_or_asked(fake: FakeApt) -> None:
    fake.fresh_lists(age_s=3600)
    assert fake.apk("add", "-q", "gcc").stdout == ""
    assert [c[1] for c in fake.apt_calls()] == ["install"]
    fake.fresh_lists(age_s=90000)
    fake.apk("add", "-q", "jq")
    assert [c[1] for c in fake.apt_calls()] == ["update", "install"]
    fake.fresh_lists()
    r = fake.apk("add", "-U", "bash")  # -U refreshes even when nothing is to install
    assert [c[1] for c in fake.apt_calls()] == ["update"]
    assert r.stdout.splitlines()[0] == "fetch http://deb.debian.org/debian bookworm InRelease"


def test_unknown_packages_fail_naming_them(fake: FakeApt) -> None:
    fake.fresh_lists()
    r = fake.apk("add", "no-such-package-xyz")
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        "ERROR: unable to select packages:",
        "  no-such-package-xyz (no such package):",
        "    required by: world[no-such-package-xyz]",
    ]
    r = fake.apk("add", "jq", "openjdk17")  # mapped: the Debian name tried is shown too
    assert r.returncode == 1
    assert "  openjdk17 (no such package; Debian name tried: openjdk-17-jdk-headless):" in r.stderr
    assert "jq" not in r.stderr and "libjq1" not in fake.read()["installed"]


def test_alternatives_pick_the_first_that_exists(fake: FakeApt) -> None:
    fake.fresh_lists()
    r = fake.apk("add", "-q", "foo-dev")  # *-dev: foo-dev|libfoo-dev
    assert r.returncode == 0, r.stderr
    assert "libfoo-dev" in fake.read()["installed"]
    r = fake.apk("add", "bar-dev")
    assert r.returncode == 1 and "bar-dev (no such package; Debian name tried: libbar-dev)" in r.stderr


def test_virtual_groups_are_removed_by_name(fake: FakeApt) -> None:
    fake.fresh_lists()
    r = fake.apk("add", "--no-cache", "--virtual", ".build-deps", "gcc", "musl-dev", "git")
    assert r.returncode == 0, r.stderr
    assert (fake.root / "var/lib/mags/apk/virtual/.build-deps").read_text() == "gcc\nlibc6-dev\n"
    r = fake.apk("del", ".build-deps")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[:2] == ["(1/2) Removing gcc (12.2)", "(2/2) Removing libc6-dev (2.36-9)"]
    installed = fake.read()["installed"]
    assert "gcc" not in installed and "libc6-dev" not in installed and "git" in installed
    assert not (fake.root / "var/lib/mags/apk/virtual/.build-deps").exists()


def test_del_removes_what_only_the_package_needed(fake: FakeApt) -> None:
    fake.fresh_lists()
    fake.apk("add", "-q", "jq")
    r = fake.apk("del", "jq")
    assert r.returncode == 0
    assert [ln.split(" (")[0] for ln in r.stdout.splitlines()[:3]] == [
        "(1/3) Removing jq", "(2/3) Removing libjq1", "(3/3) Removing libonig5"]
    assert "--autoremove" in fake.apt_calls()[-1]
    r = fake.apk("del", "jq")
    assert r.returncode == 0 and "WARNING: jq: not installed" in r.stderr


def test_del_refuses_to_take_along_what_was_installed_on_purpose_unless_r(fake: FakeApt) -> None:
    fake.fresh_lists()
    fake.apk("add", "-q", "jq")
    r = fake.apk("del", "libonig5")  # jq needs it
    assert r.returncode == 1
    assert r.stderr == "ERROR: not removing libonig5: needed by jq (apk del -r removes those too)\n"
    assert "jq" in fake.read()["installed"]
    r = fake.apk("del", "-r", "libonig5")
    assert r.returncode == 0, r.stderr
    assert not {"jq", "libjq1", "libonig5"} & set(fake.read()["installed"])


def test_stale_lists_are_refreshed_once_when_a_download_fails(fake: FakeApt) -> None:
    fake.fresh_lists()
    fake.write(stale=True)
    r = fake.apk("add", "-q", "jq")
    assert r.returncode == 0, r.stderr
    assert [c[1] for c in fake.apt_calls()] == ["install", "update", "install"]


def test_a_failed_refresh_keeps_the_old_lists_or_fails_without_any(fake: FakeApt) -> None:
    fake.write(update_fails=True)
    r = fake.apk("add", "jq")
    assert r.returncode == 1 and r.stderr.startswith("ERROR: unable to fetch the package lists")
    fake.fresh_lists(age_s=90000)
    r = fake.apk("add", "-q", "jq")
    assert r.returncode == 0 and "WARNING: updating the package lists failed" in r.stderr


def test_update_info_and_unsupported_commands(fake: FakeApt) -> None:
    r = fake.apk("update")
    assert r.returncode == 0 and r.stdout.splitlines()[-1] == "OK: 13 distinct packages available"
    fake.apk("add", "-q", "jq")
    assert fake.apk("info", "-e", "jq").stdout == "jq\n"
    assert fake.apk("info", "-e", "gcc").returncode == 1
    r = fake.apk("audit")
    assert r.returncode == 1 and "not available in this sandbox" in r.stderr
    r = fake.apk("frobnicate")
    assert r.returncode == 1 and "is not an apk command" in r.stderr
    assert fake.apk("--version").stdout.startswith("apk-tools ")
    r = fake.apk("add", "./local.apk")
    assert r.returncode == 1 and ".apk files is not supported" in r.stderr


def test_a_reader_that_goes_away_does_not_cut_an_install_short(fake: FakeApt) -> None:
    fake.fresh_lists()
    fake.write(calls=[])
    r, w = os.pipe()
    os.close(r)  # `apk add jq | head -0`, deterministically: every write gets EPIPE
    try:
        proc = subprocess.run([sys.executable, str(APK), "add", "jq"], check=False, stdout=w,
                              stderr=subprocess.PIPE, text=True, env=fake.env, timeout=30)  # fmt: skip
    finally:
        os.close(w)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert {"jq", "libjq1", "libonig5"} <= set(fake.read()["installed"])


def test_names_from_patterns_and_unknown_names_are_lower_cased() -> None:
    assert debian("py3-PyYAML") == [["python3-pyyaml"]]
    assert debian("SomeThing") == [["something"]]
    assert debian("R") == [["r-base-core"]]
