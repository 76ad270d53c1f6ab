"""Public URLs through a real `mags server`: real HTTP/WebSocket servers inside sandboxes, curl outside."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import connect as ws_connect

from mags import Mags
from tests.integration.proxy.apps import BIG_APP, WS_APP, curl, proxy_pid, rss_kb, wait_http, write_file
from tests.integration.server_fixture import ServerProc, free_port

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (sandboxes)")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    base = tmp_path_factory.mktemp("proxy")
    env = {"MAGS_PROXY_PORT": str(free_port()), "MAGS_SSH_PORT": "0"}
    srv = ServerProc(base / "data", base / "home", free_port(), "namespaces", extra_env=env).start()
    yield srv
    srv.stop(signal.SIGKILL)


@pytest.fixture(scope="module")
def proxy_port(server: ServerProc) -> int:
    return int(server.extra_env["MAGS_PROXY_PORT"])


@pytest.fixture(scope="module")
def m(server: ServerProc) -> Iterator[Mags]:
    with Mags(api_token=server.admin_token, api_url=server.url) as client:
        yield client


@pytest.fixture(scope="module")
def web(m: Mags, proxy_port: int) -> dict[str, str]:
    """One persistent sandbox serving http.server on 8080, the big-body app on 8081, WebSockets on 8765."""
    script = (
        write_file("/srv/ws.py", WS_APP) + write_file("/srv/big.py", BIG_APP)
        + "mkdir -p /srv/www && echo hello-from-sandbox > /srv/www/index.html && cd /srv/www\n"
        + "python3 /srv/ws.py & python3 /srv/big.py & exec python3 -m http.server 8080\n"
    )  # fmt: skip
    job = m.run(script, workspace_id="web", persistent=True)
    rid = job["request_id"]
    deadline = time.monotonic() + 60
    while m.status(rid)["status"] != "running":
        assert time.monotonic() < deadline, m.status(rid)
        time.sleep(0.1)
    urls = {str(port): m.url(rid, port=port)["url"] for port in (8081, 8765, 8080)}  # 8080 last: the bare name
    sub = m.status(rid)["subdomain"]
    assert urls["8080"] == f"http://{sub}.localhost:{proxy_port}"
    wait_http(urls["8080"] + "/")
    return {"rid": rid, "sub": sub, "url": urls["8080"], "big": f"http://{sub}-8081.localhost:{proxy_port}",
            "ws": f"ws://{sub}-8765.localhost:{proxy_port}"}  # fmt: skip


def test_http_server_in_the_sandbox_answers_curl(web: dict[str, str]) -> None:
    r = curl("-i", web["url"] + "/index.html")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("HTTP/1.0 200") and "hello-from-sandbox" in r.stdout
    # keep-alive between curl and the proxy, several requests on one connection
    r = curl("-s", "-o", "/dev/null", "-o", "/dev/null", "-w", "%{http_code} %{num_connects}\n",
             web["big"] + "/headers", web["big"] + "/headers")  # fmt: skip
    assert r.stdout.split("\n")[:2] == ["200 1", "200 0"]


def test_forwarded_headers(web: dict[str, str], proxy_port: int) -> None:
    r = curl("-H", "X-Forwarded-For: 6.6.6.6", web["big"] + "/headers")
    seen = dict(line.split(": ", 1) for line in r.stdout.splitlines())
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-host"] == f"{web['sub']}-8081.localhost:{proxy_port}"


def test_unknown_names_and_ports_get_404_and_a_silent_app_502(web: dict[str, str], proxy_port: int, m: Mags) -> None:
    r = curl("-i", f"http://nosuchapp.localhost:{proxy_port}/")
    assert r.stdout.startswith("HTTP/1.1 404") and "No app here" in r.stdout
    r = curl("-i", f"http://{web['sub']}-9999.localhost:{proxy_port}/")  # port never enabled
    assert r.stdout.startswith("HTTP/1.1 404") and "9999" in r.stdout
    m.url(web["rid"], port=9999)  # enabled, but nothing listens there
    r = curl("-i", f"http://{web['sub']}-9999.localhost:{proxy_port}/")
    assert r.stdout.startswith("HTTP/1.1 502") and "connection refused" in r.stdout
    m.url(web["rid"], port=8080)  # the bare name serves 8080 again
    wait_http(web["url"] + "/")


def test_websocket_echo_both_ways(web: dict[str, str], proxy_port: int) -> None:
    with ws_connect(web["ws"] + "/", open_timeout=10, address=("127.0.0.1", proxy_port)) as ws:
        assert ws.recv(timeout=10) == "hello from the sandbox"  # server -> client
        ws.send("ping?")
        assert ws.recv(timeout=10) == "ping?"
        blob = os.urandom(200_000)
        ws.send(blob)
        assert ws.recv(timeout=10) == blob


def _peak_rss_growth(pid: int, work: threading.Thread) -> int:
    base = rss_kb(pid)
    peak = base
    work.start()
    while work.is_alive():
        peak = max(peak, rss_kb(pid))
        time.sleep(0.02)
    work.join()
    return (peak - base) // 1024


def test_50mb_upload_and_download_stream_with_bounded_memory(web: dict[str, str], server: ServerProc,
                                                             tmp_path: Path) -> None:  # fmt: skip
    assert server.proc is not None
    pid = proxy_pid(server.proc.pid)  # the proxy is a child process of `mags server`
    src = tmp_path / "up.bin"
    src.write_bytes(os.urandom(50 * 1024 * 1024))
    results: dict[str, str] = {}

    def upload() -> None:  # the app reads at most ~30 MB/s: the proxy must not soak up the rest
        results["up"] = curl("-T", str(src), web["big"] + "/upload").stdout

    def download() -> None:  # a slow reader: the proxy must stop reading from the app, not buffer
        results["down"] = curl("--limit-rate", "20M", "-o", "/dev/null", "-w", "%{size_download}",
                               web["big"] + "/big").stdout  # fmt: skip

    grew_up = _peak_rss_growth(pid, threading.Thread(target=upload))
    grew_down = _peak_rss_growth(pid, threading.Thread(target=download))
    assert results == {"up": str(50 * 1024 * 1024), "down": str(50 * 1024 * 1024)}
    print(f"proxy RSS growth: upload {grew_up} MiB, download {grew_down} MiB")
    assert grew_up < 15 and grew_down < 15, (grew_up, grew_down)


def test_the_proxy_process_is_restarted_and_ends_with_the_server(web: dict[str, str], server: ServerProc,
                                                                 proxy_port: int, tmp_path: Path) -> None:  # fmt: skip
    assert server.proc is not None
    pid = proxy_pid(server.proc.pid)
    os.kill(pid, signal.SIGKILL)
    wait_http(web["url"] + "/", "200", timeout=20)  # the server started a new one on the same socket
    assert proxy_pid(server.proc.pid) != pid
    # a second server whose proxy must not outlive it, even killed with SIGKILL
    port = free_port()
    other = ServerProc(tmp_path / "data", tmp_path / "home", free_port(), "namespaces",
                       extra_env={"MAGS_PROXY_PORT": str(port), "MAGS_SSH_PORT": "0"}).start()  # fmt: skip
    assert other.proc is not None
    child = proxy_pid(other.proc.pid)
    other.stop(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and b"mags.proxy" in Path(f"/proc/{child}/cmdline").read_bytes():
        assert time.monotonic() < deadline, "the proxy process outlived its server"
        time.sleep(0.1)
