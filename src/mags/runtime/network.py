"""Sandbox networking: a pool of prepared network namespaces with NAT egress and a firewall.

Each sandbox gets its own network namespace holding one veth end (``eth0``, a /30 with the
host end as gateway).  Namespaces are created in batches ahead of need and *reused*: a
sandbox can't change its network (no CAP_NET_ADMIN), and when it ends its processes and
sockets are gone, so the namespace is clean for the next one.

Firewall (chains ``MAGS<n>-*`` of agent slot n, hooked at the top of the built-in chains):

* sandbox -> host (any host address, loopback services included): dropped, except replies
  to connections the host opened (the proxy, the SSH gateway);
* sandbox -> another sandbox, of any agent: dropped;
* sandbox -> private, link-local (cloud metadata), CGNAT, multicast ranges: dropped,
  except DNS to the host's resolvers;
* sandbox -> internet: NAT (masquerade) egress;
* a packet whose source is not the sandbox's own address: dropped (strict ``rp_filter`` on
  each host-side veth, the same check as an ``rpfilter`` rule in the raw table -- early
  demux to connected UDP sockets skips rp_filter -- and a rule dropping sources outside the
  agent's range).
IPv6 is disabled on the host ends, so there is no v6 path at all.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from mags.errors import RuntimeUnavailable, SandboxError

log = logging.getLogger(__name__)

SLOTS_PER_AGENT = 256
BLOCKED_RANGES = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4", "240.0.0.0/4",
)
NETNS_DIR = Path("/run/netns")


@dataclass
class NetSlot:
    index: int
    netns: str  # name under /run/netns
    host_if: str
    host_ip: str
    ip: str

    @property
    def netns_path(self) -> str:
        return str(NETNS_DIR / self.netns)


def _run(cmd: list[str], stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise SandboxError(f"{' '.join(cmd[:3])} failed: {proc.stderr.strip()[:500]}")
    return proc


def host_resolvers(resolv_conf: Path = Path("/etc/resolv.conf")) -> list[str]:
    """Nameservers a sandbox can reach: the host's, or systemd-resolved's upstreams."""

    def parse(p: Path) -> list[str]:
        try:
            text = p.read_text()
        except OSError:
            return []
        return re.findall(r"^\s*nameserver\s+(\S+)", text, re.M)

    servers = [s for s in parse(resolv_conf) if ":" not in s]
    usable = [s for s in servers if not ipaddress.ip_address(s).is_loopback]
    if not usable:
        usable = [s for s in parse(Path("/run/systemd/resolve/resolv.conf")) if ":" not in s]
        usable = [s for s in usable if not ipaddress.ip_address(s).is_loopback]
    return usable


class NetworkManager:
    """Owns the network namespaces, veths and firewall rules of one agent slot."""

    def __init__(self, agent_index: int, cidr: str = "10.213.0.0/16") -> None:
        self.n = agent_index
        net = ipaddress.ip_network(cidr)
        block = net.network_address + agent_index * SLOTS_PER_AGENT * 4
        self.subnet = ipaddress.ip_network(f"{block}/{32 - (SLOTS_PER_AGENT * 4).bit_length() + 1}")
        if not self.subnet.subnet_of(net):  # type: ignore[arg-type]
            raise RuntimeUnavailable(f"network_cidr {cidr} is too small for agent slot {agent_index}")
        self.all_subnet = net
        self.prefix = f"mags-a{self.n}-"
        self.chain = f"MAGS{self.n}"
        self.if_prefix = f"mg{self.n}s"
        self._free: list[NetSlot] = []
        self._used: dict[int, NetSlot] = {}
        self._next = 0
        self._lock = asyncio.Lock()
        self.resolvers = host_resolvers()
        self.started = False

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        for tool in ("ip", "iptables"):
            if shutil.which(tool) is None:
                raise RuntimeUnavailable(f"{tool} is not installed (apt-get install iproute2 iptables)")
        self.cleanup()
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1")
        self._install_firewall()
        self.started = True

    def close(self) -> None:
        self.cleanup()
        self._free.clear()
        self._used.clear()
        self.started = False

    def cleanup(self) -> None:
        """Remove every namespace, link and rule of this agent slot (leftovers included)."""
        if NETNS_DIR.is_dir():
            for ns in os.listdir(NETNS_DIR):
                if ns.startswith(self.prefix):
                    _run(["ip", "netns", "delete", ns], check=False)
        links = _run(["ip", "-o", "link", "show"], check=False).stdout
        for m in re.finditer(r"^\d+:\s+([^:@\s]+)", links, re.M):
            if m.group(1).startswith(self.if_prefix):
                _run(["ip", "link", "delete", m.group(1)], check=False)
        self._remove_firewall()

    # ------------------------------------------------------------------ firewall
    def _hooks(self) -> list[tuple[str, str, list[str]]]:
        c, i = self.chain, f"{self.if_prefix}+"
        return [
            ("filter", "INPUT", ["-i", i, "-j", f"{c}-IN"]),
            ("filter", "FORWARD", ["-i", i, "-j", f"{c}-OUT"]),
            ("filter", "FORWARD", ["-o", i, "-j", f"{c}-TO"]),
            ("nat", "POSTROUTING", ["-s", str(self.subnet), "-j", f"{c}-NAT"]),
            # the reverse-path check again, before conntrack and routing: the kernel's early
            # demux of packets for a connected local UDP socket skips rp_filter, so a sandbox
            # could otherwise pass as another to a host socket talking to that one
            ("raw", "PREROUTING", ["-i", i, "-m", "rpfilter", "--invert", "-j", "DROP"]),
        ]

    def _install_firewall(self) -> None:
        c = self.chain
        rules: list[tuple[str, list[str]]] = []
        for table, chain in (("filter", f"{c}-IN"), ("filter", f"{c}-OUT"), ("filter", f"{c}-TO"), ("nat", f"{c}-NAT")):
            rules.append((table, ["-N", chain]))
        est = ["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"]
        # a sandbox sends from its slot's address only (rp_filter checks the exact slot; this
        # also holds where a host forces rp_filter off)
        spoofed = ["!", "-s", str(self.subnet), "-j", "DROP"]
        rules.append(("filter", ["-A", f"{c}-IN", *spoofed]))
        rules.append(("filter", ["-A", f"{c}-OUT", *spoofed]))
        rules.append(("filter", ["-A", f"{c}-IN", *est]))
        rules.append(("filter", ["-A", f"{c}-IN", "-j", "DROP"]))
        rules.append(("filter", ["-A", f"{c}-OUT", "-o", "mg+", "-j", "DROP"]))
        for dns in self.resolvers:
            for proto in ("udp", "tcp"):
                rules.append(("filter", ["-A", f"{c}-OUT", "-d", dns, "-p", proto, "--dport", "53", "-j", "ACCEPT"]))
        for rng in BLOCKED_RANGES:
            rules.append(("filter", ["-A", f"{c}-OUT", "-d", rng, "-j", "DROP"]))
        rules.append(("filter", ["-A", f"{c}-OUT", "-j", "ACCEPT"]))
        rules.append(("filter", ["-A", f"{c}-TO", *est]))
        rules.append(("filter", ["-A", f"{c}-TO", "-j", "DROP"]))
        rules.append(("nat", ["-A", f"{c}-NAT", "!", "-d", str(self.all_subnet), "-j", "MASQUERADE"]))
        for table, chain, spec in self._hooks():
            rules.append((table, ["-I", chain, "1", *spec]))
        self._iptables_restore(rules)

    def _iptables_restore(self, rules: list[tuple[str, list[str]]]) -> None:
        for table, args in rules:
            _run(["iptables", "-w", "-t", table, *args])

    def _remove_firewall(self) -> None:
        for table, chain, spec in self._hooks():
            while _run(["iptables", "-w", "-t", table, "-D", chain, *spec], check=False).returncode == 0:
                pass
        c = self.chain
        for table, chain in (("filter", f"{c}-IN"), ("filter", f"{c}-OUT"), ("filter", f"{c}-TO"), ("nat", f"{c}-NAT")):
            _run(["iptables", "-w", "-t", table, "-F", chain], check=False)
            _run(["iptables", "-w", "-t", table, "-X", chain], check=False)

    def firewall_rules(self) -> list[str]:
        """Rules of this agent currently installed (for tests and `mags doctor`)."""
        out = []
        for table in ("filter", "nat", "raw"):
            text = _run(["iptables", "-w", "-t", table, "-S"], check=False).stdout
            out += [line for line in text.splitlines() if self.chain in line or f"{self.if_prefix}+" in line]
        return out

    # ------------------------------------------------------------------ slots
    def _slot(self, index: int) -> NetSlot:
        base = self.subnet.network_address + index * 4
        return NetSlot(
            index=index,
            netns=f"{self.prefix}{index}",
            host_if=f"{self.if_prefix}{index}",
            host_ip=str(base + 1),
            ip=str(base + 2),
        )

    def _create(self, slots: list[NetSlot]) -> None:
        host1 = []
        for s in slots:
            peer = f"mg{self.n}p{s.index}"
            host1 += [f"netns add {s.netns}", f"link add {s.host_if} type veth peer name {peer} netns {s.netns}"]
        _run(["ip", "-batch", "-"], "\n".join(host1) + "\n")
        host2 = []
        for s in slots:
            try:
                Path(f"/proc/sys/net/ipv6/conf/{s.host_if}/disable_ipv6").write_text("1")
            except OSError:
                pass  # kernel without IPv6: nothing to disable
            # strict reverse-path filter: a packet arriving on this slot's veth must come from
            # an address routed through it, i.e. the slot's own (no spoofing another sandbox)
            Path(f"/proc/sys/net/ipv4/conf/{s.host_if}/rp_filter").write_text("1")
            host2 += [f"addr add {s.host_ip}/30 dev {s.host_if}", f"link set {s.host_if} up"]
        _run(["ip", "-batch", "-"], "\n".join(host2) + "\n")
        for s in slots:
            peer = f"mg{self.n}p{s.index}"
            inner = [
                "link set lo up",
                f"link set {peer} name eth0",
                f"addr add {s.ip}/30 dev eth0",
                "link set eth0 up",
                f"route add default via {s.host_ip}",
            ]
            _run(["ip", "-n", s.netns, "-batch", "-"], "\n".join(inner) + "\n")

    def _grow(self, count: int) -> None:
        new = []
        for _ in range(count):
            if self._next >= SLOTS_PER_AGENT:
                break
            new.append(self._slot(self._next))
            self._next += 1
        if not new:
            return
        self._create(new)
        self._free.extend(new)

    async def prepare(self, count: int) -> None:
        """Make sure at least ``count`` free slots exist."""
        async with self._lock:
            missing = count - len(self._free)
            if missing > 0:
                await asyncio.to_thread(self._grow, missing)

    async def acquire(self) -> NetSlot:
        async with self._lock:
            if not self._free:
                await asyncio.to_thread(self._grow, 4)
            if not self._free:
                raise SandboxError(f"no free network slots (all {SLOTS_PER_AGENT} in use)")
            # oldest first: a released address is reused as late as possible, so nothing
            # that still remembers it (a proxy, a client) reaches the next tenant soon
            slot = self._free.pop(0)
            self._used[slot.index] = slot
            return slot

    def restore(self, slot: NetSlot) -> None:
        """Give ``eth0`` of a slot back its address and default route.

        gVisor's netstack takes the address off the interface it serves (the sandbox's stack
        owns it while it runs); the slot is reusable once this put it back.  Idempotent.
        """
        cmds = [
            f"addr replace {slot.ip}/30 dev eth0",
            "link set eth0 up",
            f"route replace default via {slot.host_ip} dev eth0",
        ]
        _run(["ip", "-n", slot.netns, "-batch", "-"], "\n".join(cmds) + "\n")

    def release(self, slot: NetSlot) -> None:
        if self._used.pop(slot.index, None) is not None:
            self._free.append(slot)

    @property
    def in_use(self) -> int:
        return len(self._used)

    @property
    def free(self) -> int:
        return len(self._free)

    def resolv_conf(self) -> str:
        servers = self.resolvers or ["1.1.1.1"]
        return "".join(f"nameserver {s}\n" for s in servers)

