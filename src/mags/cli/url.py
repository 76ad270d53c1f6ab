"""``mags url <name|id> [port]`` and ``mags url alias ...``."""

from __future__ import annotations

import click

from mags.cli.context import DefaultGroup, State, pass_state
from mags.cli.output import print_json, print_table


@click.group(
    "url",
    cls=DefaultGroup,
    default_cmd="show",
    no_args_is_help=True,
    subcommand_metavar="<name|id> [PORT] | alias ...",
)
def url_group() -> None:
    """Enable a public URL for a sandbox port, or manage stable URL aliases.

    \b
    Examples:
      mags url web              # port 8080
      mags url web 3000
      mags url alias my-app web
      mags url alias list
      mags url alias remove my-app
    """


@url_group.command("show")
@click.argument("name_or_id")
@click.argument("port", default=8080, type=click.IntRange(1, 65535))
@click.option("--json", "as_json", is_flag=True, help="Print the access details as JSON.")
@pass_state
def url_show(state: State, name_or_id: str, port: int, as_json: bool) -> None:
    """Enable public URL access to PORT of a sandbox and print the URL."""
    info = state.client().url(name_or_id, port=port)
    if as_json:
        print_json(info)
    else:
        click.echo(info.get("url") or info)


@url_group.group("alias", cls=DefaultGroup, default_cmd="create", no_args_is_help=True,
                 subcommand_metavar="<subdomain> <name> | list | remove <subdomain>")  # fmt: skip
def alias_group() -> None:
    """Stable URLs: a subdomain that always points at a workspace's current sandbox.

    \b
    Examples:
      mags url alias my-app web
      mags url alias list
      mags url alias remove my-app
    """


@alias_group.command("create")
@click.argument("subdomain")
@click.argument("name")
@click.option("--domain", help="Domain to serve the alias on (default: the server's).")
@click.option("--json", "as_json", is_flag=True, help="Print the alias as JSON.")
@pass_state
def alias_create(state: State, subdomain: str, name: str, domain: str | None, as_json: bool) -> None:
    """Point SUBDOMAIN at workspace NAME."""
    alias = state.client().url_alias_create(subdomain, name, domain)
    if as_json:
        print_json(alias)
    else:
        click.echo(alias.get("url") or f"alias {subdomain} -> {name} created")


@alias_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the raw answer as JSON.")
@pass_state
def alias_list(state: State, as_json: bool) -> None:
    """List URL aliases."""
    data = state.client().url_alias_list()
    if as_json:
        print_json(data)
        return
    columns = [
        ("SUBDOMAIN", lambda a: a.get("subdomain")),
        ("WORKSPACE", lambda a: a.get("workspace_id")),
        ("URL", lambda a: a.get("url")),
    ]
    print_table(data.get("aliases") or [], columns, empty="No URL aliases.")


@alias_group.command("remove")
@click.argument("subdomain")
@pass_state
def alias_remove(state: State, subdomain: str) -> None:
    """Delete the alias SUBDOMAIN."""
    state.client().url_alias_delete(subdomain)
    click.echo(f"Removed alias {subdomain}")


COMMANDS = [url_group]
