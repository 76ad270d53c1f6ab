"""``mags token create|list|revoke``: API tokens on the server."""

from __future__ import annotations

import click

from mags.cli.context import OrderedGroup, State, pass_state
from mags.cli.output import ago, echo_err, print_json, print_table


@click.group("token", cls=OrderedGroup)
def token_group() -> None:
    """Create, list and revoke API tokens.

    \b
    Examples:
      mags token create --name laptop
      mags token create --user alice            # admins only
      mags token list
      mags token revoke 3
    """


@token_group.command("create")
@click.option("--name", help="A label for the token, e.g. 'laptop' or 'ci'.")
@click.option("--user", help="Create it for another user (admins only).")
@click.option("--admin", is_flag=True, help="Give the token admin rights (admins only).")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
@pass_state
def token_create(state: State, name: str | None, user: str | None, admin: bool, as_json: bool) -> None:
    """Create a token; its secret is shown once."""
    data = state.client().token_create(name=name, user=user, admin=admin)
    if as_json:
        print_json(data)
        return
    echo_err(f"Token {data.get('id')} ({data.get('name') or 'unnamed'}) for {data.get('user')}:")
    click.echo(data.get("token"))
    echo_err("Store it now: it is not shown again. Use it with `mags login --token ...` or MAGS_API_TOKEN.")


@token_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the raw answer as JSON.")
@pass_state
def token_list(state: State, as_json: bool) -> None:
    """List tokens (never their secrets)."""
    data = state.client().token_list()
    if as_json:
        print_json(data)
        return
    columns = [
        ("ID", lambda t: t.get("id")),
        ("NAME", lambda t: t.get("name")),
        ("USER", lambda t: t.get("user")),
        ("CREATED", lambda t: ago(t.get("created_at"))),
        ("LAST USED", lambda t: ago(t.get("last_used_at")) or "never"),
        ("REVOKED", lambda t: "yes" if t.get("revoked") else ""),
    ]
    print_table(data.get("tokens") or [], columns, empty="No tokens.")


@token_group.command("revoke")
@click.argument("token_id")
@pass_state
def token_revoke(state: State, token_id: str) -> None:
    """Revoke token TOKEN_ID; it stops working at once."""
    state.client().token_revoke(token_id)
    click.echo(f"Revoked token {token_id}")


COMMANDS = [token_group]
