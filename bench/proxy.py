"""Edge proxy benchmark: wrk straight to a sandbox's app vs through the proxy, in the same run.

As root (or with sudo):

    .venv/bin/python bench/proxy.py [--seconds 8] [--connections 50] [--rounds 3] [--standalone]

Starts a real `mags server` (namespaces runtime), runs a small keep-alive node HTTP server
inside a persistent sandbox (13-byte responses), enables its public URL, and runs `wrk
--latency` with 50 keep-alive connections against the sandbox's own address ("direct") and
against the server's proxy (`Host: <sub>.localhost:<port>`; the proxy process `mags server`
starts, whose CPU is reported), interleaved round by round:

* **saturation**: as fast as wrk can go -- requests/s and the throughput ratio;
* **paced**: every connection waits 10 ms between requests (a wrk Lua ``delay``), about 4-5k
  requests/s -- p50/p99 latency without a saturated CPU, and the p99 the proxy adds.

``--standalone`` also measures ``python -m mags.proxy`` started by hand (uvloop; the same code
as the server's proxy process, without the route notifications from the server).
Medians over the rounds are printed last.  Targets: >= 50% of direct throughput, <= 2 ms added
p99.  On a 2-core machine wrk, node and the proxy share the CPUs, so the saturation p99 mostly
measures the scheduler; the paced run is the one to read for latency.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from mags import Mags
from tests.integration.server_fixture import ServerProc, free_port

NODE_APP = (
    "require('http').createServer((q, s) => { s.writeHead(200, {'Content-Type': 'text/plain', "
    "'Content-Length': '13'}); s.end('hello, world\\n'); }).listen(8080, '0.0.0.0')"
)
UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}
PACE_MS = 10


def wrk(url: str, seconds: int, connections: int, threads: int, host: str | None, script: str | None) -> dict[str, float]:
    """Run wrk; requests/s and p50/p99 latency in ms."""
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if host:
        cmd += ["-H", f"Host: {host}"]
    if script:
        cmd += ["-s", script]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    if re.search(r"Non-2xx or 3xx responses|Socket errors", out):
        raise SystemExit(f"wrk saw errors:\n{out}")
    res = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    for p in ("50", "99"):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        res[f"p{p}"] = float(m.group(1)) * UNITS[m.group(2)] if m else float("nan")  # type: ignore[union-attr]
    return res


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proxy_child(server_pid: int) -> int:
    """The pid of the edge proxy process `mags server` runs (`python -m mags.proxy --child`)."""
    for _ in range(100):
        for task in Path(f"/proc/{server_pid}/task").iterdir():
            for pid in (task / "children").read_text().split():
                try:
                    if b"mags.proxy" in Path(f"/proc/{pid}/cmdline").read_bytes():
                        return int(pid)
                except OSError:
                    continue
        time.sleep(0.1)
    return server_pid  # an in-process proxy


def sandbox_ip(server: ServerProc, vm_id: str) -> str:
    sock = server.data_dir / "run" / "agent.sock"
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://agent") as c:
        return str(c.get(f"/v1/sandboxes/{vm_id}").json()["ip"])


def wait_ok(url: str, host: str | None = None) -> None:
    for _ in range(200):
        try:
            if httpx.get(url, headers={"host": host} if host else {}, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} never answered 200")


def start_app(m: Mags) -> dict[str, str]:
    # no_sync: periodic workspace syncs are not what this measures
    job = m.run(f'exec node -e "{NODE_APP}"', workspace_id="bench", persistent=True, no_sleep=True, no_sync=True)
    rid = job["request_id"]
    deadline = time.monotonic() + 60
    while (st := m.status(rid))["status"] != "running":
        if time.monotonic() > deadline or st["status"] in ("error", "completed"):
            raise SystemExit(f"sandbox did not start: {st}")
        time.sleep(0.1)
    return {"rid": rid, "vm_id": st["vm_id"], **m.url(rid, port=8080)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runtime", default="namespaces")
    ap.add_argument("--standalone", action="store_true", help="also measure `python -m mags.proxy` (uvloop)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (sandboxes)", file=sys.stderr)
        return 2
    if shutil.which("wrk") is None:
        print("needs wrk (apt-get install wrk)", file=sys.stderr)
        return 2

    base = Path(tempfile.mkdtemp(prefix="bench-proxy-"))
    pace = base / "pace.lua"
    pace.write_text(f"function delay() return {PACE_MS} end\n")
    proxy_port = free_port()
    env = {"MAGS_PROXY_PORT": str(proxy_port), "MAGS_SSH_PORT": "0"}
    server = ServerProc(base / "data", base / "home", free_port(), args.runtime, extra_env=env).start()
    alone: subprocess.Popen[bytes] | None = None
    try:
        with Mags(api_token=server.admin_token, api_url=server.url) as m:
            app = start_app(m)
            ip = sandbox_ip(server, app["vm_id"])
            host = f"{app['subdomain']}.localhost:{proxy_port}"
            assert server.proc is not None
            targets: dict[str, tuple[str, str | None, int | None]] = {
                "direct": (f"http://{ip}:8080/", None, None),
                "proxy": (f"http://127.0.0.1:{proxy_port}/", host, proxy_child(server.proc.pid)),
            }
            if args.standalone:
                port = free_port()
                alone = subprocess.Popen(
                    [sys.executable, "-m", "mags.proxy", "--port", str(port)],
                    env={**server.env(), "MAGS_DATA_DIR": str(server.data_dir)},
                    cwd=ROOT,
                    stdout=subprocess.DEVNULL,
                )
                targets["alone"] = (f"http://127.0.0.1:{port}/", host, alone.pid)
            for url, hdr, _ in targets.values():
                wait_ok(url, hdr)
            assert httpx.get(targets["proxy"][0], headers={"host": host}).text == "hello, world\n"
            print(f"sandbox {app['vm_id']} at {ip}; public URL {app['url']}")
            print(f"wrk -t{args.threads} -c{args.connections} -d{args.seconds}s, keep-alive, 13-byte responses; "
                  f"paced: {PACE_MS} ms between requests per connection\n")  # fmt: skip
            time.sleep(3)  # let the agent refill its warm pool (sandbox starts eat CPU)
            for url, hdr, _ in targets.values():
                wrk(url, 2, args.connections, args.threads, hdr, None)  # warm-up
            runs: dict[tuple[str, str], list[dict[str, float]]] = {}
            for r in range(args.rounds):
                for mode, script in (("saturation", None), ("paced", str(pace))):
                    for name, (url, hdr, pid) in targets.items():
                        cpu0, t0 = (cpu_seconds(pid), time.monotonic()) if pid else (0.0, 0.0)
                        x = wrk(url, args.seconds, args.connections, args.threads, hdr, script)
                        if pid:
                            x["cpu"] = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
                        runs.setdefault((mode, name), []).append(x)
                        cpu = f"   proxy CPU {x['cpu'] * 100:3.0f}%" if "cpu" in x else ""
                        print(f"round {r + 1} {mode:10} {name:6} {x['rps']:8.0f} req/s   "
                              f"p50 {x['p50']:6.2f} ms   p99 {x['p99']:7.2f} ms{cpu}")  # fmt: skip
            report(runs, list(targets))
            m.stop(app["rid"])
    finally:
        if alone is not None:
            alone.terminate()
            alone.wait()
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 0


def report(runs: dict[tuple[str, str], list[dict[str, float]]], names: list[str]) -> None:
    """Medians over the rounds, with throughput ratio and added p99 against direct."""

    def med(mode: str, name: str, key: str) -> float:
        return statistics.median(x[key] for x in runs[(mode, name)])

    print(f"\nmedians over {len(runs[('paced', 'direct')])} rounds")
    print(f"{'':18}{'req/s':>9}{'ratio':>8}{'p50 ms':>9}{'p99 ms':>9}{'+p99 ms':>9}")
    for mode in ("saturation", "paced"):
        d_rps, d_p99 = med(mode, "direct", "rps"), med(mode, "direct", "p99")
        for name in names:
            rps, p99 = med(mode, name, "rps"), med(mode, name, "p99")
            print(f"{mode:10}{name:8}{rps:9.0f}{rps / d_rps * 100:7.0f}%{med(mode, name, 'p50'):9.2f}"
                  f"{p99:9.2f}{p99 - d_p99:+9.2f}")  # fmt: skip
    sat = med("saturation", "proxy", "rps") / med("saturation", "direct", "rps")
    added = med("paced", "proxy", "p99") - med("paced", "direct", "p99")
    print(f"\nmags server's proxy: {sat * 100:.0f}% of direct throughput (target >= 50%); "
          f"adds {added:+.2f} ms p99 at ~{med('paced', 'proxy', 'rps'):.0f} req/s (target <= 2 ms)")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
