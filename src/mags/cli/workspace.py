"""``mags workspace list|delete``."""

from __future__ import annotations

import sys

import click

from mags.cli.context import OrderedGroup, State, pass_state
from mags.cli.output import ago, human_bytes, print_json, print_table


@click.group("workspace", cls=OrderedGroup)
def workspace_group() -> None:
    """List and delete workspaces.

    \b
    Examples:
      mags workspace list
      mags workspace delete myproject
      mags workspace delete --force myproject   # also stop a script running on it
    """


def _ws_id(w: dict) -> str:
    return w.get("workspace_id") or w.get("id") or w.get("name") or ""


@workspace_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the raw answer as JSON.")
@pass_state
def workspace_list(state: State, as_json: bool) -> None:
    """List workspaces."""
    data = state.client().list_workspaces()
    if as_json:
        print_json(data)
        return
    columns = [
        ("WORKSPACE", _ws_id),
        ("PERSISTENT", lambda w: {True: "yes", False: "no"}.get(w.get("persistent"), "")),
        ("DISK", lambda w: f"{w['disk_gb']} GB" if w.get("disk_gb") else ""),
        ("SIZE", lambda w: human_bytes(w.get("size_bytes"))),
        ("SYNCED", lambda w: ago(w.get("last_synced_at") or w.get("updated_at"))),
        ("CREATED", lambda w: ago(w.get("created_at"))),
    ]
    print_table(data.get("workspaces") or [], columns, empty="No workspaces.")


@workspace_group.command("delete")
@click.argument("workspace_id")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--force", is_flag=True, help="Also stop a script still running on it.")
@pass_state
def workspace_delete(state: State, workspace_id: str, yes: bool, force: bool) -> None:
    """Delete a workspace and all its stored data.

    An idle or sleeping sandbox on it is stopped first (its changes are not synced: they
    are being deleted). While a script still runs on it the delete is refused, unless
    --force, which stops that job too.
    """
    if not yes and sys.stdin.isatty():
        click.confirm(f"Delete workspace '{workspace_id}' and all its data?", abort=True)
    state.client().delete_workspace(workspace_id, force=force)
    click.echo(f"Deleted workspace {workspace_id}")


COMMANDS = [workspace_group]
