"""Apps that run inside sandboxes for the proxy tests (python3 stdlib only), and helpers."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

# WebSocket echo (RFC 6455, enough for the test): greets first (server -> client), then echoes.
WS_APP = r'''
import base64, hashlib, socketserver, struct
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
def frame(op, data):
    n = len(data)
    size = bytes([n]) if n < 126 else (b"\x7e" + struct.pack(">H", n) if n < 65536 else b"\x7f" + struct.pack(">Q", n))
    return bytes([0x80 | op]) + size + data
class H(socketserver.StreamRequestHandler):
    def handle(self):
        headers = {}
        self.rfile.readline()
        while True:
            line = self.rfile.readline()
            if line in (b"\r\n", b""):
                break
            k, _, v = line.decode().partition(":")
            headers[k.strip().lower()] = v.strip()
        accept = base64.b64encode(hashlib.sha1(headers["sec-websocket-key"].encode() + GUID).digest())
        self.wfile.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        self.wfile.write(frame(1, b"hello from the sandbox"))
        while True:
            head = self.rfile.read(2)
            if len(head) < 2:
                return
            op, n = head[0] & 0x0F, head[1] & 0x7F
            if n == 126:
                n = struct.unpack(">H", self.rfile.read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self.rfile.read(8))[0]
            mask = self.rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
            raw = self.rfile.read(n)
            data = (int.from_bytes(raw, "big") ^ int.from_bytes((mask * (n // 4 + 1))[:n], "big")).to_bytes(n, "big")
            if op == 8:
                self.wfile.write(frame(8, b""))
                return
            self.wfile.write(frame(10 if op == 9 else op, data))
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(("0.0.0.0", 8765), H).serve_forever()
'''

# Big bodies: PUT/POST counts the body reading at most ~30 MB/s; GET /big sends 50 MB; GET /headers echoes.
BIG_APP = r'''
import http.server, time
SIZE = 50 * 1024 * 1024
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def reply(self, body):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_PUT(self):
        n, got = int(self.headers.get("content-length", 0)), 0
        while got < n:
            chunk = self.rfile.read(min(65536, n - got))
            if not chunk:
                break
            got += len(chunk)
            time.sleep(0.002)
        self.reply(str(got).encode())
    do_POST = do_PUT
    def do_GET(self):
        if self.path == "/headers":
            self.reply("".join(f"{k.lower()}: {v}\n" for k, v in self.headers.items()).encode())
            return
        self.send_response(200)
        self.send_header("Content-Length", str(SIZE))
        self.end_headers()
        chunk, sent = b"x" * 65536, 0
        while sent < SIZE:
            self.wfile.write(chunk)
            sent += len(chunk)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", 8081), H).serve_forever()
'''


def write_file(path: str, text: str) -> str:
    """A shell snippet writing ``text`` to ``path`` inside the sandbox."""
    return f"mkdir -p $(dirname {path}) && cat > {path} <<'MAGS_EOF'\n{text}\nMAGS_EOF\n"


def curl(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "--max-time", str(int(timeout)), *args],
                          check=False, capture_output=True, text=True, timeout=timeout + 10)  # fmt: skip


def wait_http(url: str, expect: str = "200", timeout: float = 30) -> str:
    """Poll ``url`` with curl until it answers ``expect``; returns the last status code."""
    deadline = time.monotonic() + timeout
    code = ""
    while time.monotonic() < deadline:
        code = curl("-o", "/dev/null", "-w", "%{http_code}", url, timeout=10).stdout
        if code == expect:
            return code
        time.sleep(0.2)
    raise AssertionError(f"{url} answered {code}, never {expect}")


def proxy_pid(server_pid: int, timeout: float = 10.0) -> int:
    """The pid of the edge proxy process `mags server` runs (`python -m mags.proxy --child`)."""
    deadline = time.monotonic() + timeout
    while True:
        for task in Path(f"/proc/{server_pid}/task").iterdir():
            for pid in (task / "children").read_text().split():
                try:
                    if b"mags.proxy" in Path(f"/proc/{pid}/cmdline").read_bytes():
                        return int(pid)
                except OSError:
                    continue
        if time.monotonic() > deadline:
            raise AssertionError(f"mags server {server_pid} runs no proxy process")
        time.sleep(0.1)


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0
