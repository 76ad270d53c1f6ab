"""Edge cases of the proxy's connection handling: TLS, half-close, slow heads, settings."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from mags.config import Settings
from mags.errors import ConfigError
from mags.proxy import downstream
from mags.proxy.server import parse_networks
from proxy.harness import free_port, running_proxy, upstream_app


@pytest.fixture
async def up_port() -> Any:
    port = free_port()
    async with upstream_app(port):
        yield port


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=*.localhost", "-addext", "subjectAltName=DNS:*.localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_tls_terminates_at_the_proxy(up_port: int, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    async with running_proxy(proxy_tls_cert=cert, proxy_tls_key=key) as h:
        h.add("app", "vm-1", up_port)
        ctx = ssl.create_default_context(cafile=str(cert))
        ctx.check_hostname = False  # we dial 127.0.0.1; the certificate names *.localhost
        async with httpx.AsyncClient(verify=ctx) as c:
            r = await c.get(f"https://127.0.0.1:{h.port}/headers", headers={"host": f"app.localhost:{h.port}"})
        assert r.status_code == 200
        assert r.json()["headers"]["x-forwarded-proto"] == "https"
        assert h.proxy.settings.app_url("abc") == f"https://abc.localhost:{h.proxy.settings.proxy_port}"


async def test_bad_tls_files_are_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match="TLS certificate"):
        async with running_proxy(proxy_tls_cert=tmp_path / "c.pem"):
            pass


async def test_half_closed_client_gets_its_answer(up_port: int) -> None:
    async with running_proxy() as h:
        h.add("app", "vm-1", up_port)
        reader, writer = await asyncio.open_connection("127.0.0.1", h.port)
        writer.write(b"GET /headers HTTP/1.1\r\nHost: app.localhost\r\n\r\n")
        writer.write_eof()
        out = await asyncio.wait_for(reader.read(), 5)  # answered, then closed
        assert out.startswith(b"HTTP/1.1 200") and b'"/headers"' in out
        writer.close()


async def test_slow_request_heads_time_out(monkeypatch: pytest.MonkeyPatch, up_port: int) -> None:
    monkeypatch.setattr(downstream, "TICK_S", 0.05)
    async with running_proxy() as h:
        h.add("app", "vm-1", up_port)
        reader, writer = await asyncio.open_connection("127.0.0.1", h.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: app.localhost\r\nX-Slow: ")
        out = await asyncio.wait_for(reader.read(), 5)
        assert out.startswith(b"HTTP/1.1 408")
        writer.close()
        # and idle keep-alive connections are closed
        reader, writer = await asyncio.open_connection("127.0.0.1", h.port)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()


def test_settings_and_networks() -> None:
    s = Settings(apps_domain=".Apps.Example.COM.", proxy_port=443, proxy_tls_cert=Path("/x"))
    assert s.app_url("abc") == "https://abc.apps.example.com"
    assert Settings(proxy_port=80).app_url("abc") == "http://abc.localhost"
    assert Settings(host="0.0.0.0").proxy_listen_host == "0.0.0.0"
    assert [str(n) for n in parse_networks("10.0.0.0/8, 127.0.0.1;::1")] == ["10.0.0.0/8", "127.0.0.1/32", "::1/128"]
    with pytest.raises(ConfigError):
        parse_networks("not-an-ip")


async def test_upstream_that_closes_after_each_response(tmp_path: Path) -> None:
    """An HTTP/1.0-style app (python -m http.server): every response ends its connection."""
    port = free_port()
    (tmp_path / "index.html").write_text("hi")
    proc = await asyncio.create_subprocess_exec(
        "python3", "-m", "http.server", str(port), "--bind", "127.0.0.1", cwd=tmp_path,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with running_proxy() as h:
            h.add("old", "vm-9", port)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{h.port}", headers={"host": "old.localhost"}) as c:
                for _ in range(50):
                    try:
                        if (await c.get("/index.html")).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    await asyncio.sleep(0.1)
                for _ in range(3):  # the client reconnects as the app said; each works
                    r = await c.get("/index.html")
                    assert r.status_code == 200 and r.text == "hi"
                r = await c.head("/index.html")
                assert r.status_code == 200 and r.headers["content-length"] == "2"
    finally:
        proc.terminate()
        await proc.wait()


