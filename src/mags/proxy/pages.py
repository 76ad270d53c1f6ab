"""The proxy's own answers: small HTML pages that say what went wrong and what to do."""

from __future__ import annotations

import html
from http import HTTPStatus


class ProxyError(Exception):
    """A request the proxy answers itself, with ``status`` and a page built from the rest."""

    def __init__(self, status: int, code: str, title: str, detail: str) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code  # machine-readable, also sent as X-Mags-Error
        self.title = title
        self.detail = detail


def not_found(detail: str = "") -> ProxyError:
    return ProxyError(
        404,
        "not-found",
        "No app here",
        detail or "This URL does not belong to any sandbox. Check the address, or enable it with `mags url`.",
    )


_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#222}"
    "h1{font-size:1.4rem}code{background:#f2f2f2;padding:0 .2em}.f{color:#888;font-size:.85rem;margin-top:3rem}"
)


def render(err: ProxyError, *, head_only: bool = False, keep_alive: bool = False) -> bytes:
    """A complete HTTP/1.1 response for ``err`` (headers only for HEAD requests)."""
    status = HTTPStatus(err.status)
    body = (
        f"<!doctype html><html><head><meta charset=utf-8><title>{err.status} {html.escape(err.title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(err.title)}</h1>"
        f"<p>{html.escape(err.detail)}</p><p class=f>{err.status} {status.phrase} &middot; mags edge proxy</p>"
        "</body></html>\n"
    ).encode()
    head = (
        f"HTTP/1.1 {err.status} {status.phrase}\r\n"
        "Content-Type: text/html; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        f"X-Mags-Error: {err.code}\r\n"
        + ("Retry-After: 2\r\n" if err.status == 503 else "")
        + ("" if keep_alive else "Connection: close\r\n")
        + "\r\n"
    ).encode()
    return head if head_only else head + body
