"""workspaces, files (issues 4 and 5).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # filled in by the workspaces work


def downgrade() -> None:
    pass
