"""Initial schema: users, tokens, jobs, job_events, job_logs, agents.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("admin", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("name", name="uq_users_name"),
    )
    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer(), autoincrement=True),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("last_used_at", sa.Double()),
        sa.Column("revoked_at", sa.Double()),
        sa.PrimaryKeyConstraint("id", name="pk_tokens"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_tokens_user_id_users", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("token_hash", name="uq_tokens_token_hash"),
    )
    op.create_index("ix_tokens_user_id", "tokens", ["user_id"])
    op.create_table(
        "jobs",
        sa.Column("request_id", sa.String(36), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(63)),
        sa.Column("workspace_id", sa.String(63)),
        sa.Column("base_workspace_id", sa.String(63)),
        sa.Column("script", sa.Text(), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("persistent", sa.Boolean(), nullable=False),
        sa.Column("no_sleep", sa.Boolean(), nullable=False),
        sa.Column("no_sync", sa.Boolean(), nullable=False),
        sa.Column("ephemeral", sa.Boolean(), nullable=False),
        sa.Column("startup_command", sa.Text()),
        sa.Column("environment", sa.JSON(), nullable=False),
        sa.Column("file_ids", sa.JSON(), nullable=False),
        sa.Column("disk_gb", sa.Integer()),
        sa.Column("rootfs_type", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("vm_status", sa.String(16), nullable=False),
        sa.Column("exit_code", sa.Integer()),
        sa.Column("script_duration_ms", sa.BigInteger()),
        sa.Column("vm_id", sa.String(32)),
        sa.Column("agent_id", sa.String(64)),
        sa.Column("subdomain", sa.String(63)),
        sa.Column("error_message", sa.Text()),
        sa.Column("stop_reason", sa.Text()),
        sa.Column("log_count", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("started_at", sa.Double()),
        sa.Column("finished_at", sa.Double()),
        sa.Column("stopped_at", sa.Double()),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("request_id", name="pk_jobs"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_jobs_user_id_users", ondelete="CASCADE"),
    )
    op.create_index("ix_jobs_user_created", "jobs", ["user_id", "created_at"])
    op.create_index("ix_jobs_claim", "jobs", ["status", "vm_status", "created_at"])
    op.create_index("ix_jobs_agent_vm", "jobs", ["agent_id", "vm_status"])
    op.create_index("ix_jobs_vm_id", "jobs", ["vm_id"])
    op.create_table(
        "job_events",
        sa.Column("id", BigId, autoincrement=True),
        sa.Column("job_id", sa.String(36), nullable=False),
        sa.Column("ts", sa.Double(), nullable=False),
        sa.Column("from_status", sa.String(16)),
        sa.Column("to_status", sa.String(16), nullable=False),
        sa.Column("from_vm_status", sa.String(16)),
        sa.Column("vm_status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_job_events"),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.request_id"], name="fk_job_events_job_id_jobs", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_job_events_job", "job_events", ["job_id", "id"])
    op.create_table(
        "job_logs",
        sa.Column("job_id", sa.String(36), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("ts", sa.Double(), nullable=False),
        sa.Column("source", sa.String(8), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "seq", name="pk_job_logs"),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.request_id"], name="fk_job_logs_job_id_jobs", ondelete="CASCADE"
        ),
    )
    op.create_table(
        "agents",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("url", sa.Text()),
        sa.Column("runtime", sa.String(32)),
        sa.Column("last_seen", sa.Double()),
        sa.PrimaryKeyConstraint("id", name="pk_agents"),
    )


def downgrade() -> None:
    for table in ("agents", "job_logs", "job_events", "jobs", "tokens", "users"):
        op.drop_table(table)
