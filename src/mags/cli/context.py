"""CLI plumbing: the per-invocation state, error-to-exit-code mapping, group classes.

Exit codes: 0 ok, 1 generic/API error, 2 usage error, 3 cannot reach the server, 4 auth error,
5 not found; ``run``/``exec``/``ssh`` exit with the remote command's code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import click

from mags.errors import ClientError, MagsError

if TYPE_CHECKING:
    from mags.sdk.sync import Mags

EXIT_ERROR, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_AUTH, EXIT_NOT_FOUND = 1, 2, 3, 4, 5
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def exit_code_for_error(exc: MagsError) -> int:
    """Map an error to the documented exit codes."""
    if isinstance(exc, ClientError) and exc.status_code == 0:
        return EXIT_UNREACHABLE
    if exc.status_code in (401, 403):
        return EXIT_AUTH
    if exc.status_code == 404:
        return EXIT_NOT_FOUND
    return EXIT_ERROR


class CliError(click.ClickException):
    """One readable line on stderr, ``error: <message>``, and a meaningful exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


@dataclass
class State:
    """Per-invocation state; tests inject an ``httpx`` transport here."""

    transport: Any = None
    _client: Mags | None = field(default=None, repr=False)

    def make_client(self, **kwargs: Any) -> Mags:
        """A new SDK client (``api_token``/``api_url`` override env and config)."""
        from mags.sdk.sync import Mags

        return Mags(transport=self.transport, **kwargs)

    def client(self) -> Mags:
        """The client configured from ``MAGS_API_*`` / ``~/.mags/config.json``."""
        if self._client is None:
            self._client = self.make_client()
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


pass_state = click.make_pass_decorator(State, ensure=True)


class OrderedGroup(click.Group):
    """Lists subcommands in the order they were added (a logical order, not A-Z)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


class MagsGroup(OrderedGroup):
    """The root group: turns any :class:`MagsError` into a one-line error and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        state = ctx.ensure_object(State)
        ctx.call_on_close(state.close)
        try:
            return super().invoke(ctx)
        except MagsError as exc:
            raise CliError(str(exc) or type(exc).__name__, exit_code_for_error(exc)) from exc


class DefaultGroup(OrderedGroup):
    """A group whose arguments go to ``default_cmd`` unless they name a subcommand.

    Gives ``mags url <name> [port]`` next to ``mags url alias ...``.
    """

    def __init__(self, *args: Any, default_cmd: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.default_cmd = default_cmd

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [self.default_cmd, *args]
        return super().parse_args(ctx, args)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # The default command is reached without its name; do not list it as a subcommand.
        visible = {n: c for n, c in self.commands.items() if n != self.default_cmd}
        rows = [(n, c.get_short_help_str(limit=80)) for n, c in visible.items() if not c.hidden]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def usage_error(message: str) -> click.UsageError:
    """A usage error (exit code 2) for flag combinations the server would refuse anyway."""
    return click.UsageError(message)
