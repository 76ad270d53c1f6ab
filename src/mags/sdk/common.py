"""Client settings shared by the sync and async drivers (headers, timeouts)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from mags.sdk.base import Call
from mags.sdk.credentials import resolve_credentials


def sdk_version() -> str:
    """The installed mags version (for the User-Agent)."""
    from mags import __version__

    return __version__


@dataclass(frozen=True)
class ClientConfig:
    """Resolved URL, token and timeout of one client."""

    api_url: str
    api_token: str | None
    timeout: float | None  # None: wait as long as it takes

    @classmethod
    def create(cls, api_token: str | None, api_url: str | None, timeout: float | None) -> ClientConfig:
        creds = resolve_credentials(api_token, api_url)
        return cls(creds.api_url, creds.api_token, None if timeout is None else float(timeout))

    @property
    def has_token(self) -> bool:
        return bool(self.api_token)

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": f"mags-python/{sdk_version()}"}
        if self.api_token:
            headers["Authorization"] = f"Bearer {self.api_token}"
        return headers

    def timeout_for(self, call: Call) -> httpx.Timeout:
        """Long-polls and exec need the server's wait on top of the usual timeout."""
        if self.timeout is None:
            return httpx.Timeout(None, connect=10.0)
        return httpx.Timeout(self.timeout + call.extra_timeout, connect=min(self.timeout, 10.0))


def is_event_stream(headers: Mapping[str, str]) -> bool:
    """True if an answer is server-sent events."""
    return headers.get("content-type", "").split(";")[0].strip().lower() == "text/event-stream"
