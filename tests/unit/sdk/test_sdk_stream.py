"""Following logs: server-sent events, re-connection without duplicates, polling fallback."""

from __future__ import annotations

import httpx
import pytest

from mags.errors import ClientError
from mags.sdk.base import LogDeduper, StreamEvent
from mags.sdk.sse import SSEDecoder, to_stream_event

JOB = "5b0e7a52-2a4e-4a53-9a43-6f1f3f1f0b11"


def entry(seq, message, source="stdout"):
    return {"seq": seq, "timestamp": "2025-01-01T00:00:00Z", "source": source, "message": message}


def test_sse_decoder_handles_comments_multiline_and_crlf():
    dec = SSEDecoder()
    lines = [": keep-alive", "event: log", 'data: {"a":', "data: 1}", "", "", "event: end\r", "data: {}", ""]
    out = [m for m in (dec.feed(line) for line in lines) if m]
    assert [(m.event, m.data) for m in out] == [("log", '{"a":\n1}'), ("end", "{}")]
    assert to_stream_event(out[1]) == StreamEvent("end", {})


def test_follow_logs_yields_entries_then_returns_status(api, mags_client, make_sse):
    final = {"request_id": JOB, "status": "completed", "exit_code": 0}
    api.on(
        "GET",
        f"/mags-jobs/{JOB}/logs",
        make_sse(("log", entry(0, "a")), ("ping", {}), ("log", entry(1, "b", "stderr")), ("end", final)),
    )
    gen = mags_client.follow_logs(JOB)
    got = []
    with pytest.raises(StopIteration) as stop:
        while True:
            got.append(next(gen))
    assert [e["message"] for e in got] == ["a", "b"]
    assert stop.value.value == final
    req = api.requests[0]
    assert req.url.params["follow"] == "true"
    assert req.headers["accept"] == "text/event-stream"


def test_stream_reconnects_without_duplicates(api, mags_client, make_sse):
    final = {"status": "error", "exit_code": 2}
    api.on(
        "GET",
        f"/mags-jobs/{JOB}/logs",
        make_sse(("log", entry(0, "a")), ("log", entry(1, "b"))),  # dropped: no end event
        make_sse(("log", entry(0, "a")), ("log", entry(1, "b")), ("log", entry(2, "c")), ("end", final)),
    )
    events = list(mags_client.follow_events(JOB))
    assert [e.data.get("message") for e in events if e.kind == "log"] == ["a", "b", "c"]
    assert events[-1] == StreamEvent("end", final)
    assert api.requests[1].url.params["after"] == "1"


def test_stream_gives_up_after_repeated_empty_drops(api, mags_client, make_sse):
    api.on("GET", f"/mags-jobs/{JOB}/logs", make_sse())
    with pytest.raises(ClientError, match="keeps closing"):
        list(mags_client.follow_events(JOB))
    assert len(mags_client.slept) == 5


def test_stream_errors_are_raised(api, mags_client):
    api.on("GET", f"/mags-jobs/{JOB}/logs", (404, {"error": "job not found"}))
    with pytest.raises(ClientError, match="job not found"):
        list(mags_client.follow_events(JOB))


def test_follow_falls_back_to_polling_without_sse(api, mags_client):
    """An older server answers the follow request with plain JSON logs."""
    api.on(
        "GET",
        f"/mags-jobs/{JOB}/logs",
        {"logs": [{"source": "stdout", "message": "a"}]},
        {"logs": [{"source": "stdout", "message": "a"}, {"source": "stdout", "message": "b"}]},
    )
    api.on("GET", f"/mags-jobs/{JOB}/status", {"status": "running"}, {"status": "completed", "exit_code": 0})
    events = list(mags_client.follow_events(JOB, poll_interval=0.5))
    assert [(e.kind, e.data.get("message")) for e in events] == [
        ("log", "a"),
        ("log", "b"),
        ("end", None),
    ]
    assert events[-1].data["status"] == "completed"


def test_deduper_by_position_when_entries_have_no_seq():
    d = LogDeduper()
    assert [d.accept({"m": i}) for i in range(2)] == [True, True]
    d.restart()
    assert [d.accept({"m": i}) for i in range(3)] == [False, False, True]


def test_real_stream_through_a_transport_that_drops(mags_client, api):
    """A ReadError mid-stream re-opens the stream."""
    calls = {"n": 0}

    def flaky(request):
        calls["n"] += 1
        if calls["n"] == 1:
            raise httpx.ReadError("connection reset", request=request)
        body = b'event: log\ndata: {"seq": 0, "source": "stdout", "message": "x"}\n\nevent: end\ndata: {"status": "completed"}\n\n'
        return httpx.Response(200, headers={"content-type": "text/event-stream; charset=utf-8"}, content=body)

    api.on("GET", f"/mags-jobs/{JOB}/logs", flaky)
    assert [e.kind for e in mags_client.follow_events(JOB)] == ["log", "end"]
