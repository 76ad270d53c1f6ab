"""``mags cron add|list|remove|enable|disable``: scheduled jobs."""

from __future__ import annotations

import click

from mags.cli.context import OrderedGroup, State, pass_state
from mags.cli.jobs import parse_env, script_text
from mags.cli.output import ago, print_json, print_table


@click.group("cron", cls=OrderedGroup)
def cron_group() -> None:
    """Schedule scripts with 5-field cron expressions.

    \b
    Examples:
      mags cron add -n daily-backup -s '0 0 * * *' 'tar czf /root/backup.tar.gz /root/data'
      mags cron add -n health -s '*/5 * * * *' -w monitors 'curl -sf https://myapp.com/health'
      mags cron list
      mags cron disable <id>
    """


@cron_group.command("add", context_settings={"allow_interspersed_args": False})
@click.argument("script", nargs=-1, required=True)
@click.option("-n", "--name", required=True, help="Cron job name.")
@click.option("-s", "--schedule", required=True, metavar="EXPR", help="Cron expression, e.g. '0 */2 * * *'.")
@click.option("-w", "--workspace", metavar="NAME", help="Workspace the runs share.")
@click.option("-p", "--persistent", is_flag=True, help="Keep the VM alive after each run.")
@click.option(
    "-E", "--env", "env", multiple=True, metavar="KEY=VALUE", help="Environment variable (repeatable)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the cron job as JSON.")
@pass_state
def cron_add(
    state: State,
    script: tuple[str, ...],
    name: str,
    schedule: str,
    workspace: str | None,
    persistent: bool,
    env: tuple[str, ...],
    as_json: bool,
) -> None:
    """Create a cron job running SCRIPT on SCHEDULE."""
    job = state.client().cron_create(
        name,
        schedule,
        script_text(script),
        workspace_id=workspace,
        environment=parse_env(env) or None,
        persistent=persistent,
    )
    if as_json:
        print_json(job)
        return
    click.echo(f"Created cron job {job.get('id')} ({name}, '{schedule}')")
    if job.get("next_run_at"):
        click.echo(f"  next run: {job['next_run_at']}")


CRON_COLUMNS = [
    ("ID", lambda c: c.get("id")),
    ("NAME", lambda c: c.get("name")),
    ("SCHEDULE", lambda c: c.get("cron_expression")),
    ("ENABLED", lambda c: "yes" if c.get("enabled") else "no"),
    ("WORKSPACE", lambda c: c.get("workspace_id")),
    ("NEXT RUN", lambda c: ago(c.get("next_run_at"))),
    ("LAST RUN", lambda c: ago(c.get("last_run_at"))),
    ("LAST STATUS", lambda c: c.get("last_status")),
]


@cron_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the raw answer as JSON.")
@pass_state
def cron_list(state: State, as_json: bool) -> None:
    """List cron jobs."""
    data = state.client().cron_list()
    if as_json:
        print_json(data)
    else:
        print_table(data.get("cron_jobs") or [], CRON_COLUMNS, empty="No cron jobs.")


@cron_group.command("remove")
@click.argument("cron_id")
@pass_state
def cron_remove(state: State, cron_id: str) -> None:
    """Delete cron job CRON_ID."""
    state.client().cron_delete(cron_id)
    click.echo(f"Removed cron job {cron_id}")


@cron_group.command("enable")
@click.argument("cron_id")
@pass_state
def cron_enable(state: State, cron_id: str) -> None:
    """Enable cron job CRON_ID."""
    state.client().cron_update(cron_id, enabled=True)
    click.echo(f"Enabled cron job {cron_id}")


@cron_group.command("disable")
@click.argument("cron_id")
@pass_state
def cron_disable(state: State, cron_id: str) -> None:
    """Disable cron job CRON_ID (it stays, but does not run)."""
    state.client().cron_update(cron_id, enabled=False)
    click.echo(f"Disabled cron job {cron_id}")


COMMANDS = [cron_group]
