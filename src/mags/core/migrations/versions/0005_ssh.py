"""SSH access keys (issue 7).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ssh_keys",
        sa.Column("id", sa.Integer(), autoincrement=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("job_id", sa.String(36), nullable=False),
        sa.Column("vm_id", sa.String(32), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ssh_keys"),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.request_id"], name="fk_ssh_keys_job_id_jobs", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_ssh_keys_user_id_users", ondelete="CASCADE"),
        sa.UniqueConstraint("fingerprint", name="uq_ssh_keys_fingerprint"),
    )
    op.create_index("ix_ssh_keys_job_id", "ssh_keys", ["job_id"])


def downgrade() -> None:
    op.drop_index("ix_ssh_keys_job_id", table_name="ssh_keys")
    op.drop_table("ssh_keys")
