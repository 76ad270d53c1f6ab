"""The docs cover what a user can set and type."""

from __future__ import annotations

import re
from pathlib import Path

from mags.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_is_documented() -> None:
    doc = (ROOT / "docs" / "CONFIGURATION.md").read_text()
    documented = set(re.findall(r"^\| `([a-z0-9_]+)` \|", doc, re.M))
    assert set(Settings.model_fields) == documented


def test_every_cli_command_is_in_the_readme() -> None:
    from mags.cli.main import cli

    readme = (ROOT / "README.md").read_text()
    missing = []
    for name, cmd in cli.commands.items():
        if not re.search(rf"mags {re.escape(name)}\b", readme):
            missing.append(name)
        for sub in getattr(cmd, "commands", {}):
            if not re.search(rf"\b{re.escape(sub)}\b", readme):
                missing.append(f"{name} {sub}")
    assert missing == []
