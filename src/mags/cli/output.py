"""How the CLI prints: JSON for scripts, rich tables for people, spinners on stderr, log lines.

rich is imported lazily so that ``mags --help`` starts fast.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import click

Column = tuple[str, Callable[[dict[str, Any]], Any]]

STATUS_STYLES = {
    "running": "green",
    "sleeping": "cyan",
    "pending": "yellow",
    "accepted": "yellow",
    "completed": "dim",
    "error": "red",
}


def print_json(data: Any) -> None:
    """Pretty JSON on stdout (the ``--json`` output of every command)."""
    click.echo(json.dumps(data, indent=2, default=str))


def echo_err(message: str, **style: Any) -> None:
    """A line for people on stderr (keeps stdout for results and script output)."""
    click.secho(message, err=True, **style)


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    terminal = stream.isatty()
    # Not a terminal: wide enough that ids are never wrapped or cut when piped.
    return Console(file=stream, highlight=False, soft_wrap=False, width=None if terminal else 200)


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[Column], *, empty: str) -> None:
    """A rich table on stdout, or ``empty`` when there are no rows."""
    if not rows:
        click.echo(empty)
        return
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    for header, _ in columns:
        table.add_column(header, no_wrap=True, overflow="fold")
    for row in rows:
        cells = []
        for header, get in columns:
            value = get(row)
            text = "" if value is None else str(value)
            style = STATUS_STYLES.get(text, "") if header == "STATUS" else ""
            cells.append(Text(text, style=style))
        table.add_row(*cells)
    _console().print(table)


def print_fields(data: dict[str, Any], keys: Iterable[str]) -> None:
    """``key: value`` lines for one object (status, whoami...)."""
    keys = [k for k in keys if data.get(k) not in (None, "")]
    width = max((len(k) for k in keys), default=0)
    for key in keys:
        value = data[key]
        text = ("yes" if value else "no") if isinstance(value, bool) else value
        click.echo(f"{key + ':':<{width + 1}} {text}")


def ago(timestamp: Any) -> str:
    """``'3m ago'`` for an ISO-8601 time; the input unchanged if it does not parse."""
    if not timestamp:
        return ""
    try:
        when = datetime.fromisoformat(str(timestamp))
    except ValueError:
        return str(timestamp)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = int((datetime.now(UTC) - when).total_seconds())
    if seconds < 0:
        return "in " + _span(-seconds)
    return _span(seconds) + " ago"


def _span(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def human_bytes(value: Any) -> str:
    """``'1.5 GB'`` for a byte count."""
    if not isinstance(value, int | float):
        return "" if value is None else str(value)
    size = float(value)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(value)


class Spinner:
    """A rich spinner on stderr, only when stderr is a terminal; safe to stop twice."""

    def __init__(self, message: str) -> None:
        self.message = message
        self._status: Any = None

    def start(self) -> Spinner:
        if sys.stderr.isatty():
            self._status = _console(stderr=True).status(self.message)
            self._status.start()
        return self

    def stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


@contextmanager
def spinner(message: str) -> Iterator[Spinner]:
    """``with spinner("Starting sandbox…"):`` around anything slow."""
    spin = Spinner(message).start()
    try:
        yield spin
    finally:
        spin.stop()


def emit_log(entry: dict[str, Any], *, show_system: bool = True) -> None:
    """A log entry where it belongs: stdout lines to stdout, stderr and system lines to stderr."""
    message = str(entry.get("message", ""))
    newline = not message.endswith("\n")
    source = entry.get("source")
    if source == "stdout":
        click.echo(message, nl=newline)
    elif source == "stderr":
        click.echo(message, nl=newline, err=True)
    elif show_system:
        click.secho(f"[mags] {message}", nl=newline, err=True, dim=True)
