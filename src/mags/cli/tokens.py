"""``mags token create|list|revoke``: API tokens on the server; ``mags quota show|set``: quotas."""

from __future__ import annotations

from typing import Any

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


@click.group("quota", cls=OrderedGroup)
def quota_group() -> None:
    """Show and set per-user quotas: disk GB, workspaces, live sandboxes.

    \b
    Examples:
      mags quota show                           # your limits and usage
      mags quota show alice                     # admins: anyone's
      mags quota set alice --disk-gb 50 --sandboxes 5
      mags quota set alice --disk-gb default    # back to the server's setting
      mags quota set alice --sandboxes unlimited
    """


QUOTA_ROWS = (("disk_gb", "DISK GB"), ("workspaces", "WORKSPACES"), ("sandboxes", "SANDBOXES"))


def _quota_call(state: State, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    from mags.sdk.base import Call  # one request through the SDK client: same auth and errors

    return state.client()._call(Call(method, path, json=body))  # the SDK has no quota methods yet


def _print_quota(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(data)
        return
    note = " (admin: exempt from quotas)" if data.get("exempt") else ""
    echo_err(f"Quotas of {data.get('user')}{note}:")
    limits, usage, overrides = (data.get(k) or {} for k in ("limits", "usage", "overrides"))
    rows = [
        {
            "quota": label,
            "limit": "unlimited" if limits.get(key) is None else limits[key],
            "used": usage.get(key),
            "source": "server default" if overrides.get(key) is None else "set for this user",
        }
        for key, label in QUOTA_ROWS
    ]
    columns = [("QUOTA", lambda r: r["quota"]), ("LIMIT", lambda r: r["limit"]),
               ("USED", lambda r: r["used"]), ("FROM", lambda r: r["source"])]  # fmt: skip
    print_table(rows, columns, empty="No quotas.")


@quota_group.command("show")
@click.argument("user", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the raw answer as JSON.")
@pass_state
def quota_show(state: State, user: str | None, as_json: bool) -> None:
    """Show USER's quotas and usage (default: yours; others' for admins)."""
    _print_quota(_quota_call(state, "GET", f"/quotas/{user}" if user else "/quotas"), as_json)


DEFAULT = "default"  # back to the server's setting: null in the request


class QuotaValue(click.ParamType):
    """A quota on the command line: N, ``unlimited`` (0) or ``default`` (the server's setting)."""

    name = "N|unlimited|default"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | str:
        if isinstance(value, int):
            return value
        text = str(value).strip().lower()
        if text == "default":
            return DEFAULT
        if text in ("unlimited", "none"):
            return 0
        try:
            number = int(text)
        except ValueError:
            self.fail(f"{value!r} is not a number, 'unlimited' or 'default'", param, ctx)
        if number < 0:
            self.fail("must be 0 or more (0 = unlimited)", param, ctx)
        return number



@quota_group.command("set")
@click.argument("user")
@click.option("--disk-gb", type=QuotaValue(), help="Total disk in GB: workspaces + ephemeral sandboxes.")
@click.option("--workspaces", type=QuotaValue(), help="Number of workspaces.")
@click.option("--sandboxes", type=QuotaValue(), help="Live sandboxes (sleeping ones count).")
@click.option("--json", "as_json", is_flag=True, help="Print the raw answer as JSON.")
@pass_state
def quota_set(state: State, user: str, disk_gb: Any, workspaces: Any, sandboxes: Any, as_json: bool) -> None:
    """Set USER's quotas (admins only); the others stay as they are."""
    given = (("disk_gb", disk_gb), ("workspaces", workspaces), ("sandboxes", sandboxes))
    body = {k: None if v == DEFAULT else v for k, v in given if v is not None}
    if not body:
        raise click.UsageError("give at least one of --disk-gb, --workspaces, --sandboxes")
    _print_quota(_quota_call(state, "PATCH", f"/quotas/{user}", body), as_json)


COMMANDS = [token_group, quota_group]
