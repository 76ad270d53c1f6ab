"""A scripted fake mags API behind ``httpx.MockTransport`` for SDK unit tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

Responder = dict | list | tuple | httpx.Response | Callable[[httpx.Request], Any]


class FakeApi:
    """Routes ``(method, path)`` to queued answers; records every request it sees."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.routes: dict[tuple[str, str], list[Responder]] = {}

    def on(self, method: str, path: str, *answers: Responder) -> FakeApi:
        """Queue answers for a route; the last one repeats."""
        self.routes.setdefault((method, "/api/v1" + path), []).extend(answers)
        return self

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        queue = self.routes.get((request.method, request.url.path))
        if not queue:
            return httpx.Response(404, json={"error": f"no route {request.method} {request.url.path}"})
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if callable(answer) and not isinstance(answer, httpx.Response):
            answer = answer(request)
        if isinstance(answer, httpx.Response):
            return answer
        if isinstance(answer, tuple):
            status, body = answer
            return httpx.Response(status, json=body)
        return httpx.Response(200, json=answer)

    def calls(self, method: str | None = None, path: str | None = None) -> list[httpx.Request]:
        return [
            r
            for r in self.requests
            if (method is None or r.method == method) and (path is None or r.url.path == "/api/v1" + path)
        ]

    @staticmethod
    def body(request: httpx.Request) -> Any:
        return json.loads(request.content)


def sse(*events: tuple[str, dict]) -> httpx.Response:
    """A ``text/event-stream`` answer made of ``(event, data)`` pairs."""
    text = "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events)
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=text.encode())


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """No test reads the developer's real ~/.mags or MAGS_* variables."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("MAGS_API_TOKEN", "MAGS_TOKEN", "MAGS_API_URL"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


@pytest.fixture
def make_sse() -> Callable[..., httpx.Response]:
    return sse


@pytest.fixture
def mags_client(api):
    """A sync client talking to the fake API, with sleeps recorded instead of slept."""
    from mags import Mags

    client = Mags(api_token="tok", api_url="http://mags.test", transport=httpx.MockTransport(api))
    client.slept = []
    client._sleep = client.slept.append
    yield client
    client.close()
