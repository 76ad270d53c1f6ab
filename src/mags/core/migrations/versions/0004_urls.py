"""public URLs and URL aliases (issue 6).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_urls",
        sa.Column("job_id", sa.String(36), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("subdomain", sa.String(63), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("ports", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("job_id", name="pk_job_urls"),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.request_id"], name="fk_job_urls_job_id_jobs", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_job_urls_user_id_users", ondelete="CASCADE"),
        sa.UniqueConstraint("subdomain", name="uq_job_urls_subdomain"),
    )
    op.create_table(
        "url_aliases",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("subdomain", sa.String(63), nullable=False),
        sa.Column("workspace_id", sa.String(63), nullable=False),
        sa.Column("domain", sa.String(253), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_url_aliases"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_url_aliases_user_id_users", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("subdomain", name="uq_url_aliases_subdomain"),
    )
    op.create_index("ix_url_aliases_user_id", "url_aliases", ["user_id"])


def downgrade() -> None:
    op.drop_table("url_aliases")
    op.drop_table("job_urls")
