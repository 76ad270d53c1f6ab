"""Network policy probes from inside real sandboxes, with the host as the witness.

Every probe is run by a tenant inside a sandbox; the verdict comes from the host: a listener
the test opened records who connected (and from which address), a sniffer on the host's
interfaces records which packets left the sandbox and which left the host.  Guest errnos are
only checked as "not connected".  Traffic goes only to this host, its sandboxes, and (for the
private-range probes) to addresses the firewall must drop before they leave the host -- which
the sniffer on the host's primary interface verifies.
"""

from __future__ import annotations

import base64
import ipaddress
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mags import Mags
from tests.integration.server_fixture import ServerProc
from tests.security.conftest import Tenants
from tests.security.helpers import (
    GuestNet,
    Sniffer,
    TcpRecorder,
    UdpRecorder,
    connect_probe,
    guest_json,
    guest_net,
    guest_python,
    host_interface_with,
    host_ipv6_addresses,
    host_primary,
    in_netns,
    link_local_of,
    sandbox,
    sandbox_netns,
)

LISTEN_TCP, LISTEN_UDP = 8000, 8001
PRIVATE_TARGETS = ["169.254.169.254", "10.0.0.1", "172.16.0.1", "192.168.0.1", "100.64.0.1"]

# sandbox B's listener: logs the source of every TCP connection and datagram, echoes datagrams
LISTENER = f"""
import socket, threading
log = open('/tmp/peers.log', 'a', buffering=1)
def tcp():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('0.0.0.0', {LISTEN_TCP})); s.listen(16)
    while True:
        c, a = s.accept(); log.write('tcp %s\\n' % a[0]); c.close()
threading.Thread(target=tcp, daemon=True).start()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(('0.0.0.0', {LISTEN_UDP}))
while True:
    d, a = u.recvfrom(4096); log.write('udp %s %r\\n' % (a[0], d)); u.sendto(b'echo:' + d, a)
"""


@dataclass
class Box:
    job_id: str
    net: GuestNet


@dataclass
class Boxes:
    """Alice's sandbox A; Bob's sandboxes B (runs a logging listener) and B2."""

    a: Box
    b: Box
    b2: Box


@pytest.fixture(scope="module")
def boxes(tenants: Tenants) -> Iterator[Boxes]:
    tag = uuid.uuid4().hex[:6]
    with (
        tenants.client(tenants.alice_token) as alice,
        tenants.client(tenants.bob_token) as bob,
        sandbox(alice, f"net-a-{tag}") as a,
        sandbox(bob, f"net-b-{tag}") as b,
        sandbox(bob, f"net-b2-{tag}") as b2,
    ):
        blob = base64.b64encode(LISTENER.encode()).decode()
        started = bob.exec(
            b,
            f"echo {blob} | base64 -d > /tmp/listener.py && "
            "(nohup python3 /tmp/listener.py >/tmp/listener.out 2>&1 &) && echo started",
        )
        assert started["exit_code"] == 0, started
        boxes = Boxes(Box(a, guest_net(alice, a)), Box(b, guest_net(bob, b)), Box(b2, guest_net(bob, b2)))
        wait_for_tcp(boxes.b.net.ip, LISTEN_TCP)
        yield boxes


def wait_for_tcp(host: str, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def peers_of_b(bob: Mags, boxes: Boxes) -> list[str]:
    return bob.exec(boxes.b.job_id, "cat /tmp/peers.log")["output"].splitlines()


def not_connected(outcomes: dict[str, str]) -> dict[str, str]:
    """The probes that did connect (should be none)."""
    return {k: v for k, v in outcomes.items() if v == "connected"}


# ---------------------------------------------------------------------- the host
def test_host_services_are_unreachable_from_a_sandbox(
    alice: Mags, boxes: Boxes, sec_server: ServerProc
) -> None:
    _, primary_ip = host_primary()
    ssh_port = int(alice.enable_access(boxes.a.job_id, port=22)["ssh_port"])
    proxy_port = int(sec_server.extra_env["MAGS_PROXY_PORT"])
    with (
        TcpRecorder("0.0.0.0") as anywhere,
        TcpRecorder("127.0.0.1") as loopback,
        UdpRecorder("0.0.0.0") as udp,
    ):
        # the recorders work: the host itself reaches them
        socket.create_connection((primary_ip, anywhere.port), timeout=5).close()
        socket.create_connection(("127.0.0.1", loopback.port), timeout=5).close()
        deadline = time.monotonic() + 5
        while len(anywhere.peers) + len(loopback.peers) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(anywhere.peers) == 1 and len(loopback.peers) == 1
        anywhere.peers.clear()
        loopback.peers.clear()

        hosts = [boxes.a.net.gateway, primary_ip, "127.0.0.1", boxes.b.net.gateway]
        ports = [anywhere.port, loopback.port, sec_server.port, ssh_port, proxy_port]
        tcp = guest_json(alice, boxes.a.job_id, connect_probe([(h, p) for h in hosts for p in ports]))
        sent = guest_json(alice, boxes.a.job_id, connect_probe([(h, udp.port) for h in hosts], udp=True))
        time.sleep(1)  # let any datagram that got through arrive
        assert not_connected(tcp) == {}, tcp
        assert anywhere.peers == [] and loopback.peers == [], (anywhere.peers, loopback.peers)
        assert udp.received == [], (sent, udp.received)


def test_the_api_ports_answer_no_http_to_a_sandbox(alice: Mags, boxes: Boxes, sec_server: ServerProc) -> None:
    _, primary_ip = host_primary()
    proxy_port = int(sec_server.extra_env["MAGS_PROXY_PORT"])
    urls = [
        f"http://{h}:{p}/api/v1/health"
        for h in (boxes.a.net.gateway, primary_ip)
        for p in (sec_server.port, proxy_port)
    ]
    cmd = " ; ".join(f"curl -sS -m 2 -o /dev/null -w '{u} %{{http_code}}\\n' {u}" for u in urls)
    out = alice.exec(boxes.a.job_id, cmd, timeout=30)["output"]
    answered = [line for line in out.splitlines() if not line.endswith(" 000")]
    assert answered == [], out


# ---------------------------------------------------------------------- other sandboxes
def test_other_sandboxes_are_unreachable_but_the_host_can_reach_them(
    alice: Mags, bob: Mags, boxes: Boxes
) -> None:
    b_ip = boxes.b.net.ip
    # control: the host reaches B (TCP and UDP), and B's log records it
    socket.create_connection((b_ip, LISTEN_TCP), timeout=5).close()
    with UdpRecorder(connect_to=(b_ip, LISTEN_UDP)) as host_udp:
        host_udp.sock.send(b"from-the-host")
        assert host_udp.wait_for(b"echo:from-the-host"), "the host got no answer from sandbox B"
    before = peers_of_b(bob, boxes)
    assert any(line.startswith("tcp ") for line in before) and any(
        "from-the-host" in line for line in before
    ), before

    targets = [(b_ip, LISTEN_TCP)]
    other_tenant = guest_json(alice, boxes.a.job_id, connect_probe(targets))
    same_tenant = guest_json(bob, boxes.b2.job_id, connect_probe(targets))
    guest_json(alice, boxes.a.job_id, connect_probe([(b_ip, LISTEN_UDP)], udp=True))
    guest_json(bob, boxes.b2.job_id, connect_probe([(b_ip, LISTEN_UDP)], udp=True))
    time.sleep(1)
    assert not_connected(other_tenant) == {} and not_connected(same_tenant) == {}, (other_tenant, same_tenant)
    after = peers_of_b(bob, boxes)
    assert after == before, f"sandbox B heard from another sandbox: {after[len(before) :]}"


# ---------------------------------------------------------------------- private ranges
def test_metadata_and_private_ranges_never_leave_the_host(alice: Mags, boxes: Boxes) -> None:
    primary_if, _ = host_primary()
    veth = host_interface_with(boxes.a.net.gateway)
    targets = set(PRIVATE_TARGETS)
    with (
        Sniffer(veth, lambda p: p.dst in targets) as left_sandbox,
        Sniffer(primary_if, lambda p: p.dst in targets) as left_host,
    ):
        tcp = guest_json(alice, boxes.a.job_id, connect_probe([(t, 80) for t in PRIVATE_TARGETS], timeout=2))
        guest_json(alice, boxes.a.job_id, connect_probe([(t, 53) for t in PRIVATE_TARGETS], udp=True))
        curl = alice.exec(
            boxes.a.job_id,
            "curl -sS -m 2 -o /dev/null -w '%{http_code}' http://169.254.169.254/latest/meta-data/",
        )
        time.sleep(0.5)
    assert not_connected(tcp) == {}, tcp
    assert curl["exit_code"] != 0 and curl["output"] in ("", "000"), curl
    # the probes did leave the sandbox (the test is not vacuous) ...
    assert {p.dst for p in left_sandbox.packets} == targets, left_sandbox.packets
    # ... and the firewall dropped every one of them before the host's own interface
    assert left_host.packets == [], left_host.packets


# ---------------------------------------------------------------------- IPv6
def test_there_is_no_ipv6_path_out_of_a_sandbox(alice: Mags, boxes: Boxes) -> None:
    primary_if, _ = host_primary()
    veth = host_interface_with(boxes.a.net.gateway)
    assert Path(f"/proc/sys/net/ipv6/conf/{veth}/disable_ipv6").read_text().strip() == "1"
    routes = alice.exec(boxes.a.job_id, "ip -6 route show")["output"]
    assert "default" not in routes, routes
    assert not any(
        ipaddress.ip_network(line.split()[0]).overlaps(ipaddress.ip_network("2000::/3"))
        for line in routes.splitlines() if line.split() and line.split()[0] != "default"
    ), routes  # fmt: skip

    host_v6 = [a for a in host_ipv6_addresses(primary_if) if not a.startswith("fe80:")]
    mac = Path(f"/sys/class/net/{veth}/address").read_text().strip()
    with TcpRecorder("::") as tcp_rec, UdpRecorder("::") as udp_rec:
        hosts = [*host_v6, f"{link_local_of(mac)}%eth0", "ff02::1%eth0"]
        tcp = guest_json(
            alice, boxes.a.job_id, connect_probe([(h, tcp_rec.port) for h in hosts if not h.startswith("ff")])
        )
        guest_json(alice, boxes.a.job_id, connect_probe([(h, udp_rec.port) for h in hosts], udp=True))
        time.sleep(1)
        assert not_connected(tcp) == {}, tcp
        assert tcp_rec.peers == [] and udp_rec.received == [], (tcp_rec.peers, udp_rec.received)


# ---------------------------------------------------------------------- spoofing
SPOOF_TRANSPARENT = """
import errno, socket
out = {}
for opt, name in ((15, "IP_FREEBIND"), (19, "IP_TRANSPARENT")):
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_IP, opt, 1)
        s.bind((B_IP, B_PORT))
        s.sendto(PAYLOAD + name.encode(), (HOST_IP, HOST_PORT))
        out[name] = "sent"
    except OSError as e:
        out[name] = errno.errorcode.get(e.errno, str(e.errno))
result(out)
"""

# an IPv4+UDP datagram with B's source address, through a raw socket (needs CAP_NET_RAW)
UDP_PACKET = """
import socket, struct
def checksum(b):
    if len(b) % 2: b += b"\\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b)); s = (s >> 16) + (s & 0xFFFF); s += s >> 16
    return ~s & 0xFFFF
def udp_packet(src, sport, dst, dport, payload):
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    udp = udp[:6] + struct.pack("!H", checksum(s + d + struct.pack("!BBH", 0, 17, len(udp)) + udp)) + udp[8:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, s, d)
    return ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:] + udp
"""

SPOOF_RAW = (
    UDP_PACKET
    + """
import errno
try:
    r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    r.sendto(udp_packet(B_IP, B_PORT, HOST_IP, HOST_PORT, PAYLOAD + b"raw"), (HOST_IP, 0))
    result({"raw": "sent"})
except OSError as e:
    result({"raw": errno.errorcode.get(e.errno, str(e.errno))})
"""
)

# run by the host inside A's network namespace: a whole Ethernet frame on A's eth0, i.e.
# what a guest with full control of its interface (or of gVisor's netstack) could emit
SPOOF_FRAME = (
    UDP_PACKET
    + """
import sys
src_mac, dst_mac = (bytes.fromhex(m.replace(":", "")) for m in (SRC_MAC, DST_MAC))
frame = dst_mac + src_mac + b"\\x08\\x00" + udp_packet(B_IP, B_PORT, HOST_IP, HOST_PORT, PAYLOAD + b"frame")
p = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
p.bind(("eth0", 0))
for _ in range(3):
    p.send(frame)
print("sent")
"""
)


def spoof_vars(b_ip: str, host: UdpRecorder, payload: bytes) -> str:
    return f"B_IP, B_PORT, HOST_IP, HOST_PORT, PAYLOAD = {b_ip!r}, {LISTEN_UDP}, {host.host!r}, {host.port}, {payload!r}\n"


@pytest.fixture
def host_talking_to_b(boxes: Boxes) -> Iterator[UdpRecorder]:
    """A host UDP socket connected to sandbox B that has exchanged a datagram with it.

    Its conntrack entry makes datagrams *from B's address* to it look like replies
    (ESTABLISHED), which the firewall lets in: only the sender's true identity is in question.
    """
    with UdpRecorder(connect_to=(boxes.b.net.ip, LISTEN_UDP)) as host:
        host.sock.send(b"hello-b")
        assert host.wait_for(b"echo:hello-b"), "no answer from sandbox B"
        yield host


def test_a_sandbox_cannot_bind_another_sandboxs_address(
    alice: Mags, boxes: Boxes, host_talking_to_b: UdpRecorder
) -> None:
    payload = f"SPOOF-{uuid.uuid4().hex[:8]}-".encode()
    out = guest_json(
        alice, boxes.a.job_id, spoof_vars(boxes.b.net.ip, host_talking_to_b, payload) + SPOOF_TRANSPARENT
    )
    time.sleep(1)
    assert not any(payload in d for d in host_talking_to_b.payloads()), (out, host_talking_to_b.received)


def test_a_sandbox_cannot_spoof_another_sandbox_with_a_raw_socket(
    alice: Mags, boxes: Boxes, host_talking_to_b: UdpRecorder
) -> None:
    payload = f"SPOOF-{uuid.uuid4().hex[:8]}-".encode()
    out = guest_json(
        alice, boxes.a.job_id, spoof_vars(boxes.b.net.ip, host_talking_to_b, payload) + SPOOF_RAW
    )
    time.sleep(1)
    assert not any(payload in d for d in host_talking_to_b.payloads()), (out, host_talking_to_b.received)


def test_frames_with_another_sandboxs_source_are_dropped_at_the_host(
    boxes: Boxes, host_talking_to_b: UdpRecorder, sec_server: ServerProc
) -> None:
    """Even a sandbox that can write any frame to its interface cannot pass as another one."""
    assert sec_server.proc is not None
    ns = sandbox_netns(boxes.a.net.gateway, sec_server.proc.pid)
    veth = host_interface_with(boxes.a.net.gateway)
    dst_mac = Path(f"/sys/class/net/{veth}/address").read_text().strip()
    src_mac = in_netns(ns, ["ip", "-o", "link", "show", "eth0"]).stdout.split("link/ether ")[1].split()[0]
    payload = f"SPOOF-{uuid.uuid4().hex[:8]}-".encode()
    code = (
        f"SRC_MAC, DST_MAC = {src_mac!r}, {dst_mac!r}\n"
        + spoof_vars(boxes.b.net.ip, host_talking_to_b, payload)
        + SPOOF_FRAME
    )
    with Sniffer(veth, lambda p: p.src == boxes.b.net.ip and p.dport == host_talking_to_b.port) as seen:
        sent = in_netns(ns, [sys.executable, "-c", code])
        assert sent.returncode == 0 and "sent" in sent.stdout, sent.stderr
        time.sleep(1)
    assert seen.packets, "the forged frames never reached the host end of A's veth"
    assert not any(payload in d for d in host_talking_to_b.payloads()), host_talking_to_b.received


# ---------------------------------------------------------------------- DNS
def test_dns_resolves_through_the_hosts_resolver(alice: Mags, boxes: Boxes) -> None:
    name = "pypi.org"
    try:
        socket.getaddrinfo(name, 443, socket.AF_INET)
    except OSError as exc:
        pytest.skip(f"the host itself cannot resolve {name}: {exc}")
    res = guest_python(
        alice,
        boxes.a.job_id,
        f"import socket; print(socket.getaddrinfo({name!r}, 443, socket.AF_INET)[0][4][0])",
    )
    assert res["exit_code"] == 0, res
    ipaddress.ip_address(res["output"].strip())
