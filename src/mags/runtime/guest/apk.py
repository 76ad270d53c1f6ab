#!/usr/bin/python3
"""``apk`` for mags guests: Alpine's package commands, carried out by apt-get on Debian.

Hosted Mags guests run Alpine, and its docs install everything with ``apk add``; mags guests
run Debian.  The image build installs this file as ``/usr/local/bin/apk`` (and ``/usr/sbin/apk``)
with ``apk-map.txt`` beside it: Alpine names become Debian names through that table (names it
does not list are tried as they are), and ``add``, ``del``, ``update``, ``upgrade``, ``search``,
``info``, ``list``, ``version`` (plus ``policy``, ``fix``, ``cache``, ``stats``) run apt-get,
apt-cache and dpkg-query.  Output imitates apk's (``(1/3) Installing jq (1.6-2.1)``, ``OK: ...``,
``ERROR: unable to select packages: ...``); everything apt says is shown only when it fails
(or with ``-v``).

Package lists are refreshed (quietly) before an install when they are missing or older than a
day (``MAGS_APK_MAX_AGE`` seconds), when ``-U`` asks, and once more when a download fails
because the lists went stale.  Already installed packages cost one ``dpkg-query`` (~10 ms).

Standard library only, python 3.9+: it runs on the guest's python3.  ``MAGS_APK_ROOT``
(a prefix for the state paths) and ``MAGS_APK_MAP`` exist for tests.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

APK_TOOLS_VERSION = "2.14.4"  # the apk-tools release whose command line this follows
ROOT = os.environ.get("MAGS_APK_ROOT", "")
LISTS = Path(ROOT + "/var/lib/apt/lists")
STAMP = Path(ROOT + "/var/lib/apt/periodic/update-success-stamp")
VIRTUAL_DIR = Path(ROOT + "/var/lib/mags/apk/virtual")
MAP_NAME = "apk-map.txt"
INSTALLED_MAP = "/usr/local/lib/mags/apk/apk-map.txt"
DEFAULT_MAX_AGE_S = 86400

APT_OPTS = [
    "-o", "Dpkg::Use-Pty=0",
    "-o", "DPkg::Lock::Timeout=300",
    "-o", "APT::Keep-Downloaded-Packages=false",
    "-o", "Dpkg::Options::=--force-confdef",
    "-o", "Dpkg::Options::=--force-confold",
]  # fmt: skip

USAGE = f"""\
apk-tools {APK_TOOLS_VERSION} (mags: Alpine package names installed with apt-get on Debian)

usage: apk [<OPTIONS>...] COMMAND [<ARGUMENTS>...]

Package installation and removal:
  add        Add packages (Alpine names are mapped to Debian ones)
  del        Remove packages, or a --virtual group made by add (-r: and what needs them)
System maintenance:
  fix        Repair half-installed packages (apt-get install -f)
  update     Update the package lists
  upgrade    Upgrade installed packages
  cache      clean: remove downloaded packages
Querying package information:
  info       Installed packages, or details of given packages
  list       List packages by pattern (-I installed, -u upgradable)
  search     Search package names (and with -d descriptions)
  version    Compare installed and available versions
  policy     Show where a package would come from
  stats      Counts of installed and available packages

Options: -q quiet, -v verbose, -U/--update-cache refresh the lists first, -s simulate,
--no-cache, --no-progress, -y (all accepted), -t/--virtual NAME (add: group the packages;
del NAME removes them). Version constraints (pkg=1.2, pkg>1) and @tags are ignored:
Debian's versions are not Alpine's. The name table: {INSTALLED_MAP}
"""


class ApkError(Exception):
    """A failure reported as ``ERROR: <message>`` with exit status 1."""


# ---------------------------------------------------------------------------------- the table

Column = list  # alternatives of one package to install: Debian names, or None for "nothing"


@dataclass
class Table:
    """The Alpine → Debian name table (apk-map.txt)."""

    exact: dict[str, list[Column]] = field(default_factory=dict)
    patterns: list[tuple[str, str, list[Column]]] = field(default_factory=list)

    def lookup(self, name: str) -> list[Column]:
        """The Debian packages that stand for Alpine package ``name``: a list of columns."""
        if name in self.exact:
            return self.exact[name]
        for prefix, suffix, columns in self.patterns:
            if len(name) > len(prefix) + len(suffix) and name.startswith(prefix) and name.endswith(suffix):
                stem = name[len(prefix) : len(name) - len(suffix)]
                # Debian names are lower case (py3-PyYAML → python3-pyyaml)
                return [[None if alt is None else alt.replace("*", stem.lower()) for alt in col] for col in columns]
        return [[name.lower()]]


def parse_table(text: str) -> Table:
    """Parse apk-map.txt; ValueError names the line of any mistake."""
    table = Table()
    seen: set[str] = set()
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        key, *cols = line.split()
        where = f"apk-map.txt line {lineno}"
        if not cols:
            raise ValueError(f"{where}: {key!r} maps to nothing (use '-' for no package)")
        if key in seen:
            raise ValueError(f"{where}: {key!r} appears twice")
        seen.add(key)
        if key.count("*") > 1 or not _NAME.match(key.replace("*", "x")):
            raise ValueError(f"{where}: bad Alpine name {key!r}")
        columns: list[Column] = []
        for col in cols:
            alts: Column = []
            for alt in col.split("|"):
                if alt == "-":
                    alts.append(None)
                elif "*" in alt and "*" not in key:
                    raise ValueError(f"{where}: {alt!r} has a '*' but {key!r} is no pattern")
                elif not _NAME.match(alt.replace("*", "x")):
                    raise ValueError(f"{where}: bad Debian name {alt!r}")
                else:
                    alts.append(alt)
            columns.append(alts)
        if "*" in key:
            prefix, suffix = key.split("*")
            table.patterns.append((prefix, suffix, columns))
        else:
            table.exact[key] = columns
    return table


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9+._-]*$")
# Alpine's dependency syntax: name[@tag][op version], op one of = < > <= >= ~ ><
_SPEC = re.compile(r"^(?P<name>[^=<>~@]+)(?P<tag>@[^=<>~]*)?(?P<constraint>[=<>~].*)?$")


def load_table() -> Table:
    """The table beside this script (the image installs them together), or MAGS_APK_MAP."""
    override = os.environ.get("MAGS_APK_MAP")
    candidates = [Path(override)] if override else [
        Path(os.path.realpath(__file__)).parent / MAP_NAME, Path(INSTALLED_MAP)
    ]  # fmt: skip
    for path in candidates:
        if path.is_file():
            try:
                return parse_table(path.read_text())
            except ValueError as exc:
                raise ApkError(str(exc)) from exc
    raise ApkError(f"the package name table is missing ({candidates[0]})")


def split_spec(spec: str) -> tuple[str, str]:
    """``py3-foo>=1.2`` → (``py3-foo``, ``>=1.2``): the name and what of it is ignored."""
    m = _SPEC.match(spec)
    if not m or not _NAME.match(m.group("name")):
        raise ApkError(f"{spec!r} is not a package name")
    return m.group("name"), (m.group("tag") or "") + (m.group("constraint") or "")


# ---------------------------------------------------------------------------------- arguments

# options that take a value, by long name
_VALUED = {
    "virtual", "repository", "root", "arch", "keys-dir", "repositories-file", "cache-dir",
    "cache-max-age", "wait", "timeout", "progress-fd", "limit", "check", "test",
}  # fmt: skip
_GLOBAL_SHORT = {
    "q": "quiet", "v": "verbose", "U": "update-cache", "y": "yes", "i": "interactive", "f": "force",
    "h": "help", "V": "version", "X": "repository", "p": "root",
}  # fmt: skip
_APPLET_SHORT = {
    "add": {"t": "virtual", "s": "simulate", "u": "upgrade", "l": "latest"},
    "del": {"r": "rdepends", "s": "simulate"},
    "upgrade": {"s": "simulate", "a": "available", "l": "latest"},
    "fix": {"s": "simulate", "d": "depends", "r": "reinstall"},
    "info": {"e": "installed", "L": "contents", "a": "all", "d": "description", "s": "size",
             "w": "webpage", "R": "depends", "r": "rdepends", "P": "provides", "W": "who-owns"},
    "list": {"I": "installed", "a": "available", "u": "upgradable", "o": "origin", "O": "orphaned",
             "P": "providers"},
    "search": {"a": "all", "d": "description", "e": "exact", "x": "exact", "o": "origin", "r": "rdepends"},
    "version": {"a": "all", "c": "check", "I": "indexes", "l": "limit", "t": "test"},
}  # fmt: skip
_LONG_ALIASES = {"update": "update-cache", "upgradeable": "upgradable"}
# accepted and without effect here (apt has no counterpart, or already behaves that way)
_IGNORED = {
    "yes", "no-cache", "no-progress", "progress", "interactive", "no-interactive", "allow-untrusted",
    "force", "force-broken-world", "force-overwrite", "force-old-apk", "force-non-repository",
    "force-refresh", "force-missing-repositories", "force-no-chroot", "clean-protected", "no-chown",
    "latest", "available", "keys-dir", "repositories-file", "cache-dir", "cache-max-age", "wait",
    "timeout", "progress-fd", "arch", "no-scripts", "no-commit-hooks", "print-arch", "initdb",
    "usermode", "no-logfile", "purge", "all", "origin", "indexes", "reinstall", "depends",
}  # fmt: skip
_KNOWN_LONG = _VALUED | _IGNORED | set(_GLOBAL_SHORT.values()) | {
    v for table in _APPLET_SHORT.values() for v in table.values()
} | {"no-network", "update-cache", "help", "version", "upgradable", "who-owns"}


@dataclass
class Args:
    """A parsed command line: the applet, its operands and the options (long names)."""

    applet: str | None = None
    operands: list[str] = field(default_factory=list)
    opts: dict[str, object] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    refreshed: bool = False  # this command has run apt-get update already

    def has(self, name: str) -> bool:
        return name in self.opts

    @property
    def quiet(self) -> bool:
        return bool(self.opts.get("quiet"))

    @property
    def verbose(self) -> bool:
        return bool(self.opts.get("verbose"))


def parse_args(argv: list[str]) -> Args:
    """apk's command line: options before or after the applet, short flags bundled."""
    args = Args()
    i = 0
    only_operands = False

    def take(name: str, attached: str | None) -> None:
        nonlocal i
        if name in _VALUED:
            if attached is None:
                i += 1
                if i >= len(argv):
                    raise ApkError(f"option --{name} needs a value")
                attached = argv[i]
            args.opts.setdefault(name, [])
            args.opts[name].append(attached)  # type: ignore[union-attr]
        else:
            args.opts[name] = int(args.opts.get(name, 0)) + 1  # type: ignore[call-overload]

    while i < len(argv):
        tok = argv[i]
        if only_operands or tok == "-" or not tok.startswith("-"):
            if args.applet is None and not only_operands:
                args.applet = tok
            else:
                args.operands.append(tok)
        elif tok == "--":
            only_operands = True
            if args.applet is None:
                i += 1
                if i < len(argv):
                    args.applet = argv[i]
        elif tok.startswith("--"):
            name, eq, value = tok[2:].partition("=")
            name = _LONG_ALIASES.get(name, name)
            if name not in _KNOWN_LONG:
                args.warnings.append(f"ignoring unknown option --{name}")
            elif name in _VALUED:
                take(name, value if eq else None)
            else:
                take(name, None)
        else:
            shorts = {**_GLOBAL_SHORT, **_APPLET_SHORT.get(args.applet or "", {})}
            j = 1
            while j < len(tok):
                letter = tok[j]
                name = shorts.get(letter)
                if name is None:
                    args.warnings.append(f"ignoring unknown option -{letter}")
                elif name in _VALUED:
                    rest = tok[j + 1 :]
                    take(name, rest or None)
                    break
                else:
                    take(name, None)
                j += 1
        i += 1
    return args


# --------------------------------------------------------------------------- apt, dpkg helpers


def _apt_env() -> dict[str, str]:
    env = dict(os.environ)
    # English messages (they are parsed); nothing may prompt: there is no terminal
    env.update({"LC_ALL": "C.UTF-8", "LANGUAGE": "", "DEBIAN_FRONTEND": "noninteractive",
                "DEBCONF_NONINTERACTIVE_SEEN": "true", "APT_LISTCHANGES_FRONTEND": "none"})
    return env


def _capture(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, check=False, capture_output=True, text=True, env=_apt_env())
    except FileNotFoundError as exc:
        raise ApkError(f"{cmd[0]} is not installed: this apk needs apt and dpkg") from exc


def installed(names: list[str]) -> dict[str, str]:
    """Which of ``names`` dpkg has installed: name → version (unknown names are skipped)."""
    if not names:
        return {}
    proc = _capture(["dpkg-query", "-W", "-f", "${Package}\t${db:Status-Abbrev}\t${Version}\n", "--", *names])
    found: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and len(parts[1]) >= 2 and parts[1][1] == "i":
            found[parts[0]] = parts[2]
    return found


def all_installed() -> dict[str, tuple[str, int]]:
    """Every installed package: name → (version, installed size in KiB)."""
    proc = _capture(["dpkg-query", "-W", "-f", "${Package}\t${db:Status-Abbrev}\t${Version}\t${Installed-Size}\n"])
    found: dict[str, tuple[str, int]] = {}
    for line in proc.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) == 4 and len(parts[1]) >= 2 and parts[1][1] == "i":
            found[parts[0]] = (parts[2], int(parts[3]) if parts[3].isdigit() else 0)
    return found


def candidates(names: list[str]) -> dict[str, str]:
    """Which of ``names`` apt can install: name → candidate version."""
    if not names:
        return {}
    proc = _capture(["apt-cache", "policy", "--", *names])
    found: dict[str, str] = {}
    current = None
    for line in proc.stdout.splitlines():
        if line and not line[0].isspace() and line.endswith(":"):
            current = line[:-1].split(":")[0]
        elif current and line.strip().startswith("Candidate:"):
            version = line.split(":", 1)[1].strip()
            if version and version != "(none)":
                found[current] = version
    return found


def lists_present() -> bool:
    try:
        return any("_Packages" in p.name for p in LISTS.iterdir())
    except OSError:
        return False


def lists_stale() -> bool:
    try:
        max_age = float(os.environ.get("MAGS_APK_MAX_AGE", DEFAULT_MAX_AGE_S))
    except ValueError:
        max_age = DEFAULT_MAX_AGE_S
    try:
        return time.time() - STAMP.stat().st_mtime > max_age
    except OSError:
        return True


def refresh(args: Args, announce: bool) -> bool:
    """``apt-get update``; True if it worked.  Quiet unless ``announce`` (apk update, -U)."""
    if args.has("no-network"):
        return False
    args.refreshed = True  # tried: once per command is enough, whatever the outcome
    proc = _capture(["apt-get", "update", "-q", *APT_OPTS])
    if announce and not args.quiet:
        for line in proc.stdout.splitlines():
            m = re.match(r"^(?:Hit|Get|Ign):\d+ (.+?)(?: \[[^\]]*\])?$", line)
            if m:
                say(f"fetch {m.group(1)}")
    if proc.returncode != 0:
        errors = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith(("E:", "W:", "Err:"))]
        detail = "; ".join(errors[-3:]) or f"apt-get update exited {proc.returncode}"
        if lists_present():
            warn(f"updating the package lists failed, using the old ones ({detail})")
            return False
        raise ApkError(f"unable to fetch the package lists: {detail}")
    try:
        STAMP.parent.mkdir(parents=True, exist_ok=True)
        STAMP.touch()
    except OSError:
        pass  # the image's apt hook touches it too; a read-only /var only costs refreshes
    return True


def ensure_lists(args: Args) -> None:
    """Refresh the lists (once per command) when asked (-U), missing or stale."""
    if args.refreshed:
        return
    if args.has("update-cache"):
        refresh(args, announce=True)
    elif not lists_present() or lists_stale():
        refresh(args, announce=False)


# ------------------------------------------------------------------------------------ output


_stdout_gone = False


def say(line: str) -> None:
    """Print a line; if the reader went away (`apk add x | head -1`), keep going silently.

    Dying of SIGPIPE/BrokenPipeError here would leave apt-get and dpkg writing into a closed
    pipe in the middle of an installation.
    """
    global _stdout_gone
    if _stdout_gone:
        return
    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        _stdout_gone = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the flush at exit does not fail again
        os.close(devnull)


def warn(message: str) -> None:
    sys.stderr.write(f"WARNING: {message}\n")
    sys.stderr.flush()


def ok_line(args: Args) -> None:
    if args.quiet:
        return
    pkgs = all_installed()
    mib = sum(size for _, size in pkgs.values()) // 1024
    say(f"OK: {mib} MiB in {len(pkgs)} packages")


_SUMMARY = re.compile(r"^(\d+) upgraded, (\d+) newly installed, (\d+) to remove")
_UNPACK = re.compile(r"^Unpacking ([^\s:]+)(?::\S+)? \(([^)]+)\)(?: over \(([^)]+)\))?")
_REMOVE = re.compile(r"^(Removing|Purging configuration files for) ([^\s:]+)(?::\S+)? \(([^)]+)\)")
_INST = re.compile(r"^Inst ([^\s:]+)(?::\S+)? (?:\[([^\]]+)\] )?\(([^\s)]+)")
_REMV = re.compile(r"^(Remv|Purg) ([^\s:]+)(?::\S+)? \[([^\]]+)\]")
_NOT_FOUND = (
    re.compile(r"^E: Unable to locate package (\S+)"),
    re.compile(r"^E: Package '([^']+)' has no installation candidate"),
    re.compile(r"^E: Couldn't find any package by (?:glob|regex) '([^']+)'"),
)
_STALE = ("Failed to fetch", "Unable to fetch some archives", "404  Not Found", "404 Not Found")


@dataclass
class AptRun:
    """One apt-get transaction: its exit status, what it did, what went wrong."""

    returncode: int
    done: list[str]
    not_found: list[str]
    stale: bool
    output: list[str]


def run_apt(cmd: list[str], args: Args, removing: bool = False) -> AptRun:
    """Run apt-get, printing one apk-style line per package it installs, upgrades or removes."""
    total = 0
    done: list[str] = []
    output: list[str] = []
    not_found: list[str] = []
    stale = False
    verb_remove = "Purging" if args.has("purge") else "Removing"
    try:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
            env=_apt_env(), bufsize=1,
        )
    except FileNotFoundError as exc:
        raise ApkError(f"{cmd[0]} is not installed: this apk needs apt and dpkg") from exc
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.rstrip("\n")
        output.append(line)
        if args.verbose:
            say(line)
        event = None
        if m := _SUMMARY.match(line):
            total = int(m.group(3)) if removing else int(m.group(1)) + int(m.group(2))
        elif m := _UNPACK.match(line):
            event = f"Upgrading {m.group(1)} ({m.group(3)} -> {m.group(2)})" if m.group(3) else (
                f"Installing {m.group(1)} ({m.group(2)})")
        elif m := _INST.match(line):
            event = f"Upgrading {m.group(1)} ({m.group(2)} -> {m.group(3)})" if m.group(2) else (
                f"Installing {m.group(1)} ({m.group(3)})")
        elif ((m := _REMOVE.match(line)) and m.group(1) == "Removing") or (m := _REMV.match(line)):
            event = f"{verb_remove} {m.group(2)} ({m.group(3)})"
        elif line.startswith("E:"):
            for pat in _NOT_FOUND:
                if nf := pat.match(line):
                    not_found.append(nf.group(1))
            stale = stale or any(s in line for s in _STALE)
        elif line.startswith("Err:") and "404" in line:
            stale = True
        if event:
            done.append(event)
            if not args.quiet and not args.verbose:
                say(f"({len(done)}/{max(total, len(done))}) {event}")
    return AptRun(proc.wait(), done, not_found, stale, output)


def apt_failure(run: AptRun, what: str) -> ApkError:
    """The error for a failed apt-get, showing what apt said (its errors, else its last lines)."""
    errors = [ln for ln in run.output if ln.startswith(("E:", "dpkg: error", "Errors were encountered"))]
    shown = errors or [ln for ln in run.output if ln.strip()][-15:]
    for line in shown:
        sys.stderr.write(f"  {line}\n")
    return ApkError(f"{what} (apt-get exited {run.returncode})")


# ------------------------------------------------------------------------------------ applets


@dataclass
class Wanted:
    """One requested Alpine package and the Debian packages chosen for it."""

    spec: str
    name: str
    columns: list[Column]
    chosen: list[str] = field(default_factory=list)  # to install
    have: list[str] = field(default_factory=list)  # already installed
    missing: list[str] = field(default_factory=list)  # Debian names tried in vain


def resolve(table: Table, specs: list[str]) -> list[Wanted]:
    wanted = []
    for spec in specs:
        if spec.endswith(".apk") or "/" in spec:
            raise ApkError(f"{spec}: installing .apk files is not supported (Debian guest: use apt-get or dpkg)")
        name, ignored = split_spec(spec)
        if ignored:
            warn(f"{spec}: ignoring '{ignored}' (Debian versions differ from Alpine's)")
        wanted.append(Wanted(spec, name, table.lookup(name)))
    return wanted


def choose(wanted: list[Wanted], args: Args, upgrade: bool) -> None:
    """Pick a Debian package per column: an installed one, else the first apt knows."""
    names = sorted({alt for w in wanted for col in w.columns for alt in col if alt})
    have = installed(names)
    ambiguous: list[tuple[Wanted, Column]] = []
    for w in wanted:
        for col in w.columns:
            present = [alt for alt in col if alt and alt in have]
            real = [alt for alt in col if alt]
            if present:
                w.have.append(present[0])
                if upgrade:
                    w.chosen.append(present[0])
            elif not real:
                continue  # '-': Debian needs nothing here
            elif len(col) == 1:
                w.chosen.append(real[0])  # apt says if it does not exist
            else:
                ambiguous.append((w, col))
    if ambiguous:
        ensure_lists(args)
        known = candidates(sorted({alt for _, col in ambiguous for alt in col if alt}))
        for w, col in ambiguous:
            pick = next((alt for alt in col if alt is None or alt in known), "missing")
            if pick == "missing":
                w.missing.extend(alt for alt in col if alt)
            elif pick is not None:
                w.chosen.append(pick)


def unable_to_select(items: list[tuple[str, list[str]]]) -> ApkError:
    """apk's message for packages it cannot find; each with the Debian names tried."""
    lines = ["unable to select packages:"]
    for name, tried in items:
        other = [t for t in tried if t != name]
        note = f"; Debian name tried: {', '.join(other)}" if other else ""
        lines.append(f"  {name} (no such package{note}):")
        lines.append(f"    required by: world[{name}]")
    return ApkError("\n".join(lines))


def cmd_add(table: Table, args: Args) -> int:
    for repo in args.opts.get("repository", []):  # type: ignore[union-attr]
        warn(f"ignoring --repository {repo}: packages come from Debian's archive")
    wanted = resolve(table, args.operands)
    if args.has("update-cache"):
        ensure_lists(args)
    choose(wanted, args, args.has("upgrade"))
    missing = [(w.name, w.missing) for w in wanted if w.missing]
    if missing:
        raise unable_to_select(missing)
    to_install = list(dict.fromkeys(p for w in wanted for p in w.chosen))
    if to_install:
        ensure_lists(args)
        cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *APT_OPTS]
        if args.has("simulate"):
            cmd.append("-s")
        run = run_apt([*cmd, "--", *to_install], args)
        # lists up to a day old (or the image's) may name .debs the mirror has replaced since
        if run.returncode != 0 and run.stale and not args.refreshed and refresh(args, announce=False):
            run = run_apt([*cmd, "--", *to_install], args)
        if run.not_found:
            alpine = {p: w.name for w in wanted for p in w.chosen}
            raise unable_to_select([(alpine.get(n, n), [n]) for n in dict.fromkeys(run.not_found)])
        if run.returncode != 0:
            raise apt_failure(run, f"unable to install {' '.join(w.name for w in wanted)}")
    virtual = args.opts.get("virtual")
    if virtual and not args.has("simulate"):
        new = [p for p in to_install if p not in {h for w in wanted for h in w.have}]
        record_virtual(virtual[-1], new)  # type: ignore[index]
    ok_line(args)
    return 0


def record_virtual(name: str, packages: list[str]) -> None:
    """Remember what ``add --virtual NAME`` installed, so that ``del NAME`` removes just that."""
    if not _NAME.match(name.lstrip(".")):
        raise ApkError(f"{name!r} is not a valid name for --virtual")
    VIRTUAL_DIR.mkdir(parents=True, exist_ok=True)
    path = VIRTUAL_DIR / name
    old = path.read_text().split() if path.exists() else []
    path.write_text("".join(f"{p}\n" for p in dict.fromkeys([*old, *packages])))


def cmd_del(table: Table, args: Args) -> int:
    remove: list[str] = []
    virtuals: list[Path] = []
    for spec in args.operands:
        vpath = VIRTUAL_DIR / spec
        if _NAME.match(spec.lstrip(".")) and vpath.is_file():
            virtuals.append(vpath)
            remove.extend(installed(vpath.read_text().split()))
            continue
        if spec.startswith("."):
            warn(f"{spec}: no such virtual package")
            continue
        name, _ = split_spec(spec)
        names = [alt for col in table.lookup(name) for alt in col if alt]
        present = installed(names)
        if present:
            remove.extend(present)
        elif names:
            warn(f"{name}: not installed")
    remove = list(dict.fromkeys(remove))
    if remove:
        # --autoremove: as apk does, also drop what only these packages needed
        verb = "purge" if args.has("purge") else "remove"
        cmd = ["apt-get", verb, "-y", "-q", "--autoremove", *APT_OPTS]
        if not args.has("rdepends"):
            needed_by = dependents(cmd, remove)
            if needed_by:
                raise ApkError(f"not removing {' '.join(remove)}: needed by {' '.join(needed_by)} "
                               "(apk del -r removes those too)")  # fmt: skip
        if args.has("simulate"):
            cmd.append("-s")
        run = run_apt([*cmd, "--", *remove], args, removing=True)
        if run.returncode != 0:
            raise apt_failure(run, f"unable to remove {' '.join(remove)}")
    if not args.has("simulate"):
        for vpath in virtuals:
            vpath.unlink(missing_ok=True)
    ok_line(args)
    return 0


def dependents(cmd: list[str], remove: list[str]) -> list[str]:
    """Packages installed on purpose that removing ``remove`` would take along.

    apt-get removes whatever depends on a removed package; apk refuses to remove what another
    package of the world needs (unless -r).  Packages apt installed only as dependencies (auto)
    may go: that is apk's behaviour too.
    """
    sim = _capture([*cmd, "-s", "--", *remove])
    gone = [m.group(2) for line in sim.stdout.splitlines() if (m := _REMV.match(line))]
    manual = set(_capture(["apt-mark", "showmanual"]).stdout.split())
    return [p for p in gone if p not in remove and p in manual]


def cmd_update(table: Table, args: Args) -> int:
    refresh(args, announce=True)
    if not args.quiet:
        proc = _capture(["apt-cache", "stats"])
        m = re.search(r"Normal packages: (\d+)", proc.stdout)
        say(f"OK: {m.group(1) if m else '?'} distinct packages available")
    return 0


def cmd_upgrade(table: Table, args: Args) -> int:
    ensure_lists(args)
    cmd = ["apt-get", "-y", "-q", "--no-install-recommends", *APT_OPTS]
    if args.has("simulate"):
        cmd.append("-s")
    if args.operands:
        names = [alt for w in resolve(table, args.operands) for col in w.columns for alt in col if alt]
        targets = list(installed(names))
        if not targets:
            ok_line(args)
            return 0
        cmd[1:1] = ["install", "--only-upgrade"]
        cmd += ["--", *targets]
    else:
        cmd[1:1] = ["upgrade", "--with-new-pkgs"]
    run = run_apt(cmd, args)
    if run.returncode != 0:
        raise apt_failure(run, "unable to upgrade")
    ok_line(args)
    return 0


def _glob_regex(pattern: str, exact: bool) -> str:
    """apk search matches a glob (a bare word: anywhere in the name); apt-cache wants a regex."""
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return f"^{body}$" if exact or any(c in pattern for c in "*?") else body


def cmd_search(table: Table, args: Args) -> int:
    if not lists_present():
        refresh(args, announce=False)
    exact = args.has("exact")
    results: dict[str, str] = {}
    for pattern in args.operands or ["*"]:
        regexes = [_glob_regex(pattern, exact)]
        if not any(c in pattern for c in "*?"):
            regexes += [f"^{re.escape(alt)}$" for col in table.lookup(pattern) for alt in col if alt and alt != pattern]
        for regex in regexes:
            cmd = ["apt-cache", "search"] + ([] if args.has("description") else ["--names-only"]) + ["--", regex]
            for line in _capture(cmd).stdout.splitlines():
                name, _, desc = line.partition(" - ")
                results.setdefault(name, desc)
    for name in sorted(results):
        say(f"{name} - {results[name]}" if not args.quiet else name)
    return 0


def _debian_names(table: Table, names: list[str]) -> list[tuple[str, list[str]]]:
    """Each Alpine name with its Debian names: the installed ones if any, else all of them."""
    out = []
    for spec in names:
        name, _ = split_spec(spec)
        alts = [alt for col in table.lookup(name) for alt in col if alt]
        present = list(installed(alts))
        out.append((name, present or alts))
    return out


def cmd_info(table: Table, args: Args) -> int:
    if args.has("who-owns"):
        status = 0
        for path in args.operands:
            proc = _capture(["dpkg-query", "-S", os.path.abspath(path)])
            if proc.returncode != 0:
                sys.stderr.write(f"ERROR: {path}: Could not find owner package\n")
                status = 1
                continue
            pkg = proc.stdout.split(":", 1)[0].split(",")[0].strip()
            version = installed([pkg]).get(pkg, "")
            say(f"{os.path.abspath(path)} is owned by {pkg}-{version}")
        return status
    if not args.operands:
        pkgs = all_installed()
        for name in sorted(pkgs):
            say(f"{name}-{pkgs[name][0]}" if args.verbose else name)
        return 0
    if args.has("installed"):
        status = 0
        for name, debs in _debian_names(table, args.operands):
            have = installed(debs)
            if debs and all(d in have for d in debs):
                say(f"{name}-{have[debs[0]]}" if args.verbose else name)
            else:
                status = 1
        return status
    status = 0
    for name, debs in _debian_names(table, args.operands):
        for deb in debs:
            proc = _capture(["apt-cache", "show", "--no-all-versions", "--", deb])
            fields = _control_fields(proc.stdout)
            if proc.returncode != 0 or not fields:
                have = installed([deb])
                if not have:
                    sys.stderr.write(f"ERROR: {name}: no such package\n")
                    status = 1
                    continue
                fields = {"Package": deb, "Version": have[deb]}
            selected = [k for k in _INFO_FIELDS if args.has(k)] or ["description", "webpage", "size"]
            for what in selected:
                say(f"{deb}-{fields.get('Version', '')} {_INFO_FIELDS[what]}:\n{_info_field(what, deb, fields)}\n")
    return status


_INFO_FIELDS = {
    "description": "description", "webpage": "webpage", "size": "installed size", "depends": "depends on",
    "rdepends": "is required by", "contents": "contains",
}  # fmt: skip


def _info_field(what: str, deb: str, fields: dict[str, str]) -> str:
    """One block of ``apk info``, from apt-cache show's fields (or dpkg for the file list)."""
    if what == "description":
        # bookworm's Packages files carry the short description as Description, or (when apt
        # also fetched translations) as Description-en
        return (fields.get("Description") or fields.get("Description-en", "")).split("\n")[0]
    if what == "webpage":
        return fields.get("Homepage", "")
    if what == "size":
        return f"{fields.get('Installed-Size', '0')} KiB"
    if what == "depends":
        return "\n".join(d.strip() for d in fields.get("Depends", "").split(",") if d.strip())
    if what == "rdepends":
        lines = _capture(["apt-cache", "rdepends", "--installed", "--", deb]).stdout.splitlines()[2:]
        return "\n".join(dict.fromkeys(ln.strip().lstrip("|") for ln in lines if ln.strip()))
    lines = _capture(["dpkg-query", "-L", deb]).stdout.splitlines()
    return "\n".join(ln.lstrip("/") for ln in lines if ln not in ("/.", ""))


def _control_fields(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        if line[0].isspace() and key:
            fields[key] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def cmd_list(table: Table, args: Args) -> int:
    arch = os.uname().machine
    if args.has("installed"):
        pkgs = all_installed()
        pats = [_glob_regex(p, exact=True) for p in args.operands]
        for name in sorted(pkgs):
            if not pats or any(re.match(p, name) for p in pats):
                say(f"{name}-{pkgs[name][0]} {arch} {{{name}}} [installed]")
        return 0
    if not lists_present():
        refresh(args, announce=False)
    patterns: list[str] = []
    for pat in args.operands:
        patterns.append(pat)
        if not any(c in pat for c in "*?[") and _NAME.match(pat):
            patterns += [alt for col in table.lookup(pat) for alt in col if alt and alt != pat]
    cmd = ["apt", "list"] + (["--upgradable"] if args.has("upgradable") else []) + ["--", *patterns]
    for line in _capture(cmd).stdout.splitlines():
        m = re.match(r"^([^/\s]+)/\S+ (\S+) (\S+)(?: \[(.*)\])?", line)
        if not m:
            continue
        name, version, _, state = m.groups()
        tag = ""
        if state and state.startswith("upgradable from: "):
            tag = f" [upgradable from: {name}-{state.split(': ', 1)[1]}]"
        elif state and "installed" in state:
            tag = " [installed]"
        say(f"{name}-{version} {arch} {{{name}}}{tag}")
    return 0


def _compare(a: str, b: str) -> str:
    if a == b:
        return "="
    proc = _capture(["dpkg", "--compare-versions", a, "lt", b])
    return "<" if proc.returncode == 0 else ">"


def cmd_version(table: Table, args: Args) -> int:
    if args.has("test"):
        if len(args.opts["test"]) + len(args.operands) < 2:  # type: ignore[arg-type]
            raise ApkError("version -t needs two versions")
        a, b = [*args.opts["test"], *args.operands][:2]  # type: ignore[misc]
        say(_compare(a, b))
        return 0
    if args.has("check"):
        for v in [*args.opts["check"], *args.operands]:  # type: ignore[misc]
            if _capture(["dpkg", "--validate-version", v]).returncode != 0:
                say(v)
        return 0
    limit = "".join(args.opts.get("limit", [])) or None  # type: ignore[arg-type]
    rows: list[tuple[str, str, str]] = []
    if args.operands:
        for name, debs in _debian_names(table, args.operands):
            have = installed(debs)
            cand = candidates(debs)
            for deb in debs:
                if deb in have:
                    avail = cand.get(deb, have[deb])
                    rows.append((f"{deb}-{have[deb]}", _compare(have[deb], avail), avail))
    else:
        for line in _capture(["apt", "list", "--upgradable"]).stdout.splitlines():
            m = re.match(r"^([^/\s]+)/\S+ (\S+) \S+ \[upgradable from: ([^\]]+)\]", line)
            if m:
                rows.append((f"{m.group(1)}-{m.group(3)}", "<", m.group(2)))
    say(f"{'Installed:':<40}Available:")
    for left, rel, right in rows:
        if limit is None or rel in limit:
            say(f"{left:<40}{rel} {right}")
    return 0


def cmd_policy(table: Table, args: Args) -> int:
    names = [deb for _, debs in _debian_names(table, args.operands) for deb in debs]
    proc = _capture(["apt-cache", "policy", "--", *names])
    sys.stdout.write(proc.stdout)
    return proc.returncode


def cmd_fix(table: Table, args: Args) -> int:
    ensure_lists(args)
    _capture(["dpkg", "--configure", "-a"])  # an install cut short leaves packages unconfigured
    run = run_apt(["apt-get", "install", "-f", "-y", "-q", "--no-install-recommends", *APT_OPTS], args)
    if run.returncode != 0:
        raise apt_failure(run, "unable to fix the installed packages")
    ok_line(args)
    return 0


def cmd_cache(table: Table, args: Args) -> int:
    action = args.operands[0] if args.operands else ""
    if action in ("clean", "purge"):
        _capture(["apt-get", "clean"])
    elif action not in ("sync", "download"):
        raise ApkError("usage: apk cache clean|purge|sync|download")
    return 0


def cmd_stats(table: Table, args: Args) -> int:
    pkgs = all_installed()
    say(f"installed:\n  packages: {len(pkgs)}\n  size: {sum(s for _, s in pkgs.values()) // 1024} MiB")
    return 0


APPLETS = {
    "add": cmd_add, "del": cmd_del, "update": cmd_update, "upgrade": cmd_upgrade, "search": cmd_search,
    "info": cmd_info, "list": cmd_list, "version": cmd_version, "policy": cmd_policy, "fix": cmd_fix,
    "cache": cmd_cache, "stats": cmd_stats,
}  # fmt: skip
UNSUPPORTED = {"audit", "dot", "fetch", "index", "manifest", "mkpkg", "verify", "convndx", "convdb", "adbdump"}


def main(argv: list[str]) -> int:
    try:
        args = parse_args(argv)
        for w in args.warnings:
            warn(w)
        if args.has("version") and args.applet is None:
            say(f"apk-tools {APK_TOOLS_VERSION}, compiled for {os.uname().machine} (mags: apt-get on Debian)")
            return 0
        if args.has("help") or args.applet is None:
            sys.stdout.write(USAGE)
            return 0 if args.has("help") else 1
        if args.applet in UNSUPPORTED:
            raise ApkError(f"'apk {args.applet}' is not available in this sandbox (Debian: use apt-get or dpkg)")
        applet = APPLETS.get(args.applet)
        if applet is None:
            sys.stderr.write(f"apk: '{args.applet}' is not an apk command. See 'apk --help'.\n")
            return 1
        if args.has("root") and args.opts["root"] != ["/"]:
            raise ApkError("--root is not supported in this sandbox")
        return applet(load_table(), args)
    except ApkError as exc:
        sys.stderr.write(f"ERROR: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
