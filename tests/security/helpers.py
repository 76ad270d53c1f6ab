"""Host-side oracles for the security suite: listeners, a packet sniffer, process and memory counts.

A probe run inside a sandbox only tells what the guest was told; these helpers let a test
check what actually happened on the host: which connections and datagrams a host socket
received (and from which address), which packets left through an interface, which host
processes belong to a sandbox, how much memory the host has left.  Plus small wrappers to
run Python inside a sandbox and read back a JSON answer.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import os
import re
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from mags import Mags

RESULT_MARK = "MAGS-PROBE-RESULT:"
NETNS_DIR = Path("/run/netns")


# ---------------------------------------------------------------------- inside a sandbox
def guest_python(m: Mags, job_id: str, code: str, *, timeout: int = 60) -> dict[str, Any]:
    """Run ``code`` with the guest's python3 (through exec); the exec answer."""
    blob = base64.b64encode(code.encode()).decode()
    return m.exec(job_id, f"python3 -c \"import base64; exec(base64.b64decode('{blob}'))\"", timeout=timeout)


def guest_json(m: Mags, job_id: str, code: str, *, timeout: int = 60) -> Any:
    """Run ``code``, which calls ``result(obj)`` once; return ``obj``."""
    prelude = f"import json as _j\ndef result(obj):\n    print({RESULT_MARK!r} + _j.dumps(obj), flush=True)\n"
    res = guest_python(m, job_id, prelude + code, timeout=timeout)
    for line in res["output"].splitlines():
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK) :])
    raise AssertionError(
        f"guest probe printed no result (exit {res['exit_code']}):\n{res['output']}\n{res['stderr']}"
    )


@dataclass(frozen=True)
class GuestNet:
    """A sandbox's IPv4 address and its default gateway (the host end of its veth)."""

    ip: str
    gateway: str


def guest_net(m: Mags, job_id: str) -> GuestNet:
    out = m.exec(job_id, "ip -4 -o addr show eth0; ip -4 route show default")["output"]
    ip = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/", out)
    gw = re.search(r"default via (\d+\.\d+\.\d+\.\d+)", out)
    assert ip and gw, f"no address or default route in the sandbox:\n{out}"
    return GuestNet(ip.group(1), gw.group(1))


def connect_probe(targets: list[tuple[str, int]], *, timeout: float = 2.0, udp: bool = False) -> str:
    """Guest code: try every ``(host, port)`` at once; ``result({"host port": outcome})``.

    TCP outcomes: ``connected``, ``timeout``, or the errno name (``ECONNREFUSED``,
    ``ENETUNREACH`` ...).  UDP: ``sent`` or the errno name (a datagram's fate is the host's
    listener to tell).
    """
    return f"""
import errno, socket, threading
targets = {targets!r}
out = {{}}
def one(host, port):
    key = f"{{host}} {{port}}"
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        s = socket.socket(fam, socket.SOCK_DGRAM if {udp!r} else socket.SOCK_STREAM)
        s.settimeout({timeout!r})
        if {udp!r}:
            for _ in range(3):
                s.sendto(b"probe from a sandbox", (host, port))
            out[key] = "sent"
        else:
            s.connect((host, port))
            out[key] = "connected"
        s.close()
    except socket.timeout:
        out[key] = "timeout"
    except OSError as e:
        out[key] = errno.errorcode.get(e.errno, str(e.errno))
threads = [threading.Thread(target=one, args=t) for t in targets]
for t in threads: t.start()
for t in threads: t.join()
result(out)
"""


@contextlib.contextmanager
def sandbox(m: Mags, name: str, **opts: Any) -> Iterator[str]:
    """``m.new(name)`` for the duration; yields the job id; stops it afterwards."""
    job_id = m.new(name, timeout=120, **opts)["request_id"]
    try:
        yield job_id
    finally:
        with contextlib.suppress(Exception):
            m.stop(job_id)


# ---------------------------------------------------------------------- host listeners
@dataclass
class TcpRecorder:
    """A host TCP listener that records the address of every connection it accepts."""

    host: str = "0.0.0.0"
    port: int = 0
    peers: list[tuple[str, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        fam = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._sock = socket.socket(fam, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if fam == socket.AF_INET6:
            self._sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        self._sock.bind((self.host, self.port))
        self._sock.listen(64)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, addr = self._sock.accept()
            except OSError:
                continue
            self.peers.append((addr[0], addr[1]))
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class UdpRecorder:
    """A host UDP socket that records every datagram (payload, source) it receives.

    ``connect_to`` makes it a *connected* socket (it then only accepts datagrams from that
    peer, as the kernel and conntrack see it) that has already sent one datagram there.
    """

    host: str = "0.0.0.0"
    port: int = 0
    connect_to: tuple[str, int] | None = None
    received: list[tuple[bytes, tuple[str, int]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        fam = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_DGRAM)
        if fam == socket.AF_INET6:
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        self.sock.bind((self.host, self.port))
        if self.connect_to is not None:
            self.sock.connect(self.connect_to)
        self.sock.settimeout(0.2)
        self.host, self.port = self.sock.getsockname()[:2]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65536)
            except OSError:
                continue
            self.received.append((data, (addr[0], addr[1])))

    def payloads(self) -> list[bytes]:
        return [d for d, _ in self.received]

    def wait_for(self, payload_part: bytes, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(payload_part in d for d in self.payloads()):
                return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Packet:
    src: str
    dst: str
    proto: int
    dport: int | None


class Sniffer:
    """Record the IPv4 packets crossing a host interface (an ``AF_PACKET`` socket) whose
    destination ``wanted`` accepts: did a probe leave the sandbox, did it leave the host?"""

    def __init__(self, ifname: str, wanted: Callable[[Packet], bool]) -> None:
        self.ifname = ifname
        self.wanted = wanted
        self.packets: list[Packet] = []
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        self._sock.bind((ifname, 0))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self._sock.recv(65536)
            except OSError:
                continue
            pkt = parse_ipv4_frame(frame)
            if pkt is not None and self.wanted(pkt):
                self.packets.append(pkt)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_ipv4_frame(frame: bytes) -> Packet | None:
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return None
    ip = frame[14:]
    ihl = (ip[0] & 0x0F) * 4
    proto = ip[9]
    src, dst = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
    dport = struct.unpack("!H", ip[ihl + 2 : ihl + 4])[0] if proto in (6, 17) and len(ip) >= ihl + 4 else None
    return Packet(src, dst, proto, dport)


# ---------------------------------------------------------------------- host network facts
def host_primary() -> tuple[str, str]:
    """The host's primary interface and address (what ``ip route get 1.1.1.1`` would use)."""
    out = subprocess.run(["ip", "route", "get", "1.1.1.1"], capture_output=True, text=True, check=True).stdout
    dev = re.search(r"\bdev (\S+)", out)
    src = re.search(r"\bsrc (\S+)", out)
    assert dev and src, out
    return dev.group(1), src.group(1)


def host_ipv6_addresses(ifname: str) -> list[str]:
    out = subprocess.run(
        ["ip", "-6", "-o", "addr", "show", "dev", ifname], capture_output=True, text=True, check=False
    ).stdout
    return re.findall(r"inet6 (\S+)/", out)


def host_interface_with(address: str) -> str:
    """The host interface that holds ``address`` (a sandbox's gateway: the host end of its veth)."""
    out = subprocess.run(
        ["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True
    ).stdout
    for line in out.splitlines():
        m = re.match(r"\d+:\s+(\S+)\s+inet (\S+)/", line)
        if m and m.group(2) == address:
            return m.group(1)
    raise AssertionError(f"no host interface holds {address}")


def link_local_of(mac: str) -> str:
    """The EUI-64 IPv6 link-local address an interface with ``mac`` would have."""
    b = bytearray(int(x, 16) for x in mac.split(":"))
    b[0] ^= 0x02
    eui = bytes(b[:3]) + b"\xff\xfe" + bytes(b[3:])
    return str(ipaddress.IPv6Address(b"\xfe\x80" + b"\x00" * 6 + eui))


def sandbox_netns(gateway: str, server_pid: int) -> Path:
    """The network namespace file of the sandbox whose gateway is ``gateway``.

    ``mg<n>s<k>`` (host end of the veth) belongs to namespace ``mags-a<n>-<k>``
    (ARCHITECTURE.md, "Agents and host slots"), whose ``/run/netns`` entry exists in the
    server's private mount namespace: reached through ``/proc/<server pid>/root``.  Checked
    by the peer's interface index.
    """
    veth = host_interface_with(gateway)
    m = re.fullmatch(r"mg(\d+)s(\d+)", veth)
    assert m, f"unexpected host veth name {veth}"
    ns = Path(f"/proc/{server_pid}/root") / NETNS_DIR.relative_to("/") / f"mags-a{m.group(1)}-{m.group(2)}"
    ifindex = Path(f"/sys/class/net/{veth}/ifindex").read_text().strip()
    out = in_netns(ns, ["ip", "-o", "link", "show", "eth0"]).stdout
    assert f"@if{ifindex}:" in out, f"{ns} is not the namespace behind {veth}: {out}"
    return ns


def in_netns(ns: Path, argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` on the host inside network namespace ``ns``."""
    return subprocess.run(
        ["nsenter", f"--net={ns}", "--", *argv], capture_output=True, text=True, timeout=timeout, check=False
    )


# ---------------------------------------------------------------------- host processes, memory
def host_pids() -> list[int]:
    return [int(n) for n in os.listdir("/proc") if n.isdigit()]


def process_start(pid: int) -> int | None:
    """Start time of ``pid`` (clock ticks after boot), None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def processes_in_netns(ns: Path) -> dict[int, int]:
    """Host processes in network namespace ``ns``: pid -> start time."""
    try:
        want = os.stat(ns)
    except OSError:
        return {}
    found = {}
    for pid in host_pids():
        try:
            st = os.stat(f"/proc/{pid}/ns/net")
        except OSError:
            continue
        if (st.st_ino, st.st_dev) == (want.st_ino, want.st_dev):
            start = process_start(pid)
            if start is not None:
                found[pid] = start
    return found


def still_alive(procs: dict[int, int]) -> dict[int, int]:
    """The processes of ``procs`` (pid -> start time) that still exist (same pid, same start)."""
    return {pid: start for pid, start in procs.items() if process_start(pid) == start}


def mem_available() -> int:
    """The host's ``MemAvailable`` in bytes."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no MemAvailable in /proc/meminfo")


class Sampler:
    """Call ``fn`` every ``interval`` seconds in a thread; keep every value."""

    def __init__(self, fn: Callable[[], Any], interval: float = 0.1) -> None:
        self.fn = fn
        self.interval = interval
        self.values: list[Any] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                self.values.append(self.fn())
            self._stop.wait(self.interval)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
