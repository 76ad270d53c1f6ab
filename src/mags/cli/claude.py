"""``mags setup-claude``: teach Claude Code to run things in mags sandboxes (``/mags``)."""

from __future__ import annotations

from pathlib import Path

import click

SKILL = """\
---
description: Run code or commands in an isolated mags sandbox
argument-hint: <what to run or build>
allowed-tools: Bash(mags:*)
---
Use the `mags` CLI to do the following in a secure sandbox, never on this machine: $ARGUMENTS

How to use mags:
- One-off script (fresh sandbox, output streamed, exits with the script's code):
  `mags run 'cd /root && python3 -c "print(1)"'`
- Keep files between runs in a named workspace: `mags run -w NAME 'script'`
  (add `-p` to persist it to object storage and keep the VM alive).
- Upload local files (they appear in /root and /uploads): `mags run -f data.csv 'python3 /root/data.csv'`
- Long-lived sandbox: `mags new NAME`, then `mags exec NAME 'command'` as often as needed,
  and `mags stop NAME` when done.
- Serve a web app: `mags run -w NAME -p --url --port 3000 'node server.js'` prints a public URL.
- Inspect: `mags list`, `mags status NAME`, `mags logs NAME`.

The sandbox is Linux with user root, home /root, python3, node, git, curl and a package manager.
Report the commands you ran and their results. Clean up sandboxes you created with `mags stop`.
"""


@click.command("setup-claude")
@click.option("--project", is_flag=True, help="Install into ./.claude of this project instead of ~/.claude.")
@click.option("--print", "print_only", is_flag=True, help="Print the command file instead of writing it.")
def setup_claude_cmd(project: bool, print_only: bool) -> None:
    """Install the /mags command for Claude Code.

    \b
    Examples:
      mags setup-claude             # then, in Claude Code: /mags scrape example.com and summarize it
      mags setup-claude --project
    """
    if print_only:
        click.echo(SKILL, nl=False)
        return
    root = Path.cwd() if project else Path.home()
    target = root / ".claude" / "commands" / "mags.md"
    target.parent.mkdir(parents=True, exist_ok=True)
    existed = target.exists()
    target.write_text(SKILL)
    click.echo(f"{'Updated' if existed else 'Installed'} {target}")
    click.echo("In Claude Code, use: /mags <what to run>")


COMMANDS = [setup_claude_cmd]
