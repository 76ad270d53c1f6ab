"""cron jobs and their runs (issue 8).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "cron_jobs",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("cron_expression", sa.String(255), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("script", sa.Text(), nullable=False),
        sa.Column("workspace_id", sa.String(63)),
        sa.Column("environment", sa.JSON(), nullable=False),
        sa.Column("persistent", sa.Boolean(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("overlap_policy", sa.String(16), nullable=False),
        sa.Column("next_run_at", sa.Double()),
        sa.Column("last_run_at", sa.Double()),
        sa.Column("last_job_id", sa.String(36)),
        sa.Column("last_run_status", sa.String(16)),
        sa.Column("last_reason", sa.Text()),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_cron_jobs"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_cron_jobs_user_id_users", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("user_id", "name", name="uq_cron_jobs_user_id_name"),
    )
    op.create_index("ix_cron_jobs_due", "cron_jobs", ["enabled", "next_run_at"])
    op.create_table(
        "cron_runs",
        sa.Column("id", BigId, autoincrement=True),
        sa.Column("cron_id", sa.String(36), nullable=False),
        sa.Column("scheduled_for", sa.Double(), nullable=False),
        sa.Column("job_id", sa.String(36)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text()),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("claimed_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_cron_runs"),
        sa.ForeignKeyConstraint(
            ["cron_id"], ["cron_jobs.id"], name="fk_cron_runs_cron_id_cron_jobs", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("cron_id", "scheduled_for", name="uq_cron_runs_cron_id_scheduled_for"),
    )
    op.create_index("ix_cron_runs_status", "cron_runs", ["status", "claimed_at"])


def downgrade() -> None:
    op.drop_table("cron_runs")
    op.drop_table("cron_jobs")
