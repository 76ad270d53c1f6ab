"""CLI test helpers: a scripted fake API behind ``httpx.MockTransport`` and a runner."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from mags.cli.context import State
from mags.cli.main import cli

JOB = "5b0e7a52-2a4e-4a53-9a43-6f1f3f1f0b11"
JOB2 = "0d6f3c1c-8a4f-4b9e-8d52-6c0c6f0f2a22"


class FakeApi:
    """Routes ``(method, path)`` to queued answers (the last repeats); records requests."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.routes: dict[tuple[str, str], list[Any]] = {}

    def on(self, method: str, path: str, *answers: Any) -> FakeApi:
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
            return httpx.Response(answer[0], json=answer[1])
        return httpx.Response(200, json=answer)

    def calls(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method and r.url.path == "/api/v1" + path]

    @staticmethod
    def body(request: httpx.Request) -> Any:
        return json.loads(request.content)


def sse(*events: tuple[str, dict]) -> httpx.Response:
    text = "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events)
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=text.encode())


def listing(*jobs: dict) -> dict:
    return {"jobs": list(jobs), "total": len(jobs), "page": 1, "page_size": 100}


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("MAGS_API_TOKEN", "MAGS_TOKEN", "MAGS_API_URL", "MAGS_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MAGS_API_TOKEN", "test-token")
    monkeypatch.setenv("MAGS_API_URL", "http://mags.test")
    return home


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
def mags(api) -> Callable[..., Result]:
    """``mags("run", "echo hi")`` → click Result (stdout and stderr kept apart)."""

    def invoke(*args: str, input: str | None = None, transport: Any = "fake") -> Result:
        state = State(transport=httpx.MockTransport(api) if transport == "fake" else transport)
        return CliRunner().invoke(cli, list(args), obj=state, input=input, catch_exceptions=False)

    return invoke


@pytest.fixture
def helpers():
    class H:
        JOB = JOB
        JOB2 = JOB2
        sse = staticmethod(sse)
        listing = staticmethod(listing)

    return H
