"""The per-job byte cap on logs, counted the same way by the agent and the control plane.

A job's log is capped twice: by the agent while it turns output into log lines (so its event
buffer stays bounded) and by the state applier where rows are written (so the database does,
whatever an agent sends).  A line costs its UTF-8 bytes plus one for its newline; the line that
crosses the cap is cut to fit, then one ``system`` line says so.  The agent marks that line
with ``data[TRUNCATED_KEY] = cap`` so the applier records the truncation in the job's history
instead of adding a second line.
"""

from __future__ import annotations

TRUNCATED_KEY = "log_truncated_bytes"


def line_bytes(text: str) -> int:
    """What a log line counts against the cap: its UTF-8 bytes and its newline."""
    return (len(text) if text.isascii() else len(text.encode())) + 1


def cut_text(text: str, max_bytes: int) -> str:
    """The longest prefix of ``text`` of at most ``max_bytes`` UTF-8 bytes (whole characters)."""
    if max_bytes <= 0:
        return ""
    if text.isascii():
        return text[:max_bytes]
    return text.encode()[:max_bytes].decode("utf-8", "ignore")


def cut_bytes(data: bytes, truncated: bool) -> str:
    """Decode output that may have been cut at a byte limit, without a broken last character.

    Invalid UTF-8 elsewhere becomes U+FFFD, as for any output; only a character the cut split
    is dropped rather than shown as garbage.
    """
    if truncated:
        for back in range(1, min(4, len(data)) + 1):
            byte = data[-back]
            if byte & 0xC0 != 0x80:  # the last character's first byte
                need = 1 if byte < 0x80 else 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else 4
                if need > back:
                    data = data[:-back]
                break
    return data.decode(errors="replace")


def truncation_message(cap: int) -> str:
    """The ``system`` log line written once a job's log reached ``cap`` bytes."""
    return f"log truncated at {cap} bytes: later output is dropped"


def truncation_reason(cap: int) -> str:
    """The job history entry for the same event (``mags status``)."""
    return f"logs truncated at {cap} bytes"
