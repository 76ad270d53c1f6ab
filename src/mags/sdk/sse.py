"""A server-sent events decoder (the ``text/event-stream`` format), fed line by line.

Used for ``GET /mags-jobs/{id}/logs?follow=true``: ``event: log`` carries a log entry,
``event: end`` the final job status.  Comment lines (``: keep-alive``) are ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mags.sdk.base import StreamEvent


@dataclass(frozen=True)
class SSEMessage:
    """One dispatched event."""

    event: str
    data: str
    id: str | None = None


class SSEDecoder:
    """Accumulate ``field: value`` lines; a blank line dispatches the event."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, line: str) -> SSEMessage | None:
        """Feed one line (without its line ending); return an event when one completes."""
        line = line.rstrip("\r\n")
        if not line:
            if not self._data and not self._event:
                return None
            msg = SSEMessage(self._event or "message", "\n".join(self._data), self._id)
            self._event, self._data = "", []
            return msg
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            self._id = value
        return None  # "retry" and unknown fields are ignored, as the spec says


def to_stream_event(msg: SSEMessage) -> StreamEvent | None:
    """Map an SSE message to a log/end event; ``None`` for anything else (pings...)."""
    try:
        data: Any = json.loads(msg.data) if msg.data else {}
    except ValueError:
        data = {"message": msg.data}
    if not isinstance(data, dict):
        return None
    if msg.event == "end":
        return StreamEvent("end", data)
    if msg.event == "log" or (msg.event == "message" and "message" in data and "source" in data):
        return StreamEvent("log", data)
    return None
