"""Database tables (SQLAlchemy Core), portable between SQLite and PostgreSQL.

Timestamps are epoch seconds (UTC) in double-precision columns: cheap to compare and sort on
both engines, rendered as ISO-8601 by the API.  The schema itself is created and changed only
by the Alembic migrations in ``core/migrations``; keep both in step.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

# Integer ids autoincrement as SQLite rowids and as PostgreSQL identity/serial columns.
BigId = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("admin", Boolean, nullable=False, default=False),
    Column("created_at", Double, nullable=False),
    # per-user quota overrides (core/quotas.py): null = the server's setting, 0 = no limit
    Column("quota_disk_gb", Integer),
    Column("quota_workspaces", Integer),
    Column("quota_sandboxes", Integer),
)

tokens = Table(
    "tokens",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("name", String(100), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", Double, nullable=False),
    Column("last_used_at", Double),
    Column("revoked_at", Double),
)

jobs = Table(
    "jobs",
    metadata,
    Column("request_id", String(36), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(63)),
    Column("workspace_id", String(63)),
    Column("base_workspace_id", String(63)),
    Column("script", Text, nullable=False),
    Column("type", String(16), nullable=False, default="inline"),
    Column("persistent", Boolean, nullable=False, default=False),
    Column("no_sleep", Boolean, nullable=False, default=False),
    Column("no_sync", Boolean, nullable=False, default=False),
    Column("ephemeral", Boolean, nullable=False, default=False),
    Column("startup_command", Text),
    Column("environment", JSON, nullable=False),
    Column("file_ids", JSON, nullable=False),
    Column("disk_gb", Integer),
    Column("rootfs_type", String(32), nullable=False, default="standard"),
    # the script's wall-clock limit asked for at submit (null: the server's default)
    Column("timeout_s", Double),
    Column("status", String(16), nullable=False),
    Column("vm_status", String(16), nullable=False),
    Column("exit_code", Integer),
    Column("script_duration_ms", BigInteger),
    Column("vm_id", String(32)),
    Column("agent_id", String(64)),
    Column("subdomain", String(63)),
    Column("error_message", Text),
    # why the sandbox is being stopped (set before asking the agent, read when it reports back)
    Column("stop_reason", Text),
    # number of job_logs rows written; the next line's seq is log_count + 1
    Column("log_count", Integer, nullable=False, default=0),
    Column("created_at", Double, nullable=False),
    Column("started_at", Double),
    Column("finished_at", Double),
    Column("stopped_at", Double),
    Column("updated_at", Double, nullable=False),
    Index("ix_jobs_user_created", "user_id", "created_at"),
    Index("ix_jobs_claim", "status", "vm_status", "created_at"),
    Index("ix_jobs_agent_vm", "agent_id", "vm_status"),
    Index("ix_jobs_vm_id", "vm_id"),
)

job_events = Table(
    "job_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("job_id", String(36), ForeignKey("jobs.request_id", ondelete="CASCADE"), nullable=False),
    Column("ts", Double, nullable=False),
    Column("from_status", String(16)),
    Column("to_status", String(16), nullable=False),
    Column("from_vm_status", String(16)),
    Column("vm_status", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Index("ix_job_events_job", "job_id", "id"),
)

job_logs = Table(
    "job_logs",
    metadata,
    Column("job_id", String(36), ForeignKey("jobs.request_id", ondelete="CASCADE"), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("ts", Double, nullable=False),
    Column("source", String(8), nullable=False),
    Column("message", Text, nullable=False),
)

agents = Table(
    "agents",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("url", Text),
    Column("runtime", String(32)),
    Column("last_seen", Double),
)

# --- cron (issue 8): scheduled jobs and one row per handled tick
cron_jobs = Table(
    "cron_jobs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(63), nullable=False),
    Column("cron_expression", String(255), nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("script", Text, nullable=False),
    Column("workspace_id", String(63)),
    Column("environment", JSON, nullable=False),
    Column("persistent", Boolean, nullable=False, default=False),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("overlap_policy", String(16), nullable=False),
    # the tick to handle next (NULL while disabled); advancing it is how a scheduler claims a tick
    Column("next_run_at", Double),
    Column("last_run_at", Double),
    Column("last_job_id", String(36)),
    Column("last_run_status", String(16)),
    Column("last_reason", Text),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    UniqueConstraint("user_id", "name"),
    Index("ix_cron_jobs_due", "enabled", "next_run_at"),
)

cron_runs = Table(
    "cron_runs",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("cron_id", String(36), ForeignKey("cron_jobs.id", ondelete="CASCADE"), nullable=False),
    Column("scheduled_for", Double, nullable=False),
    # the job's request_id, chosen when the tick is claimed (before the job row exists)
    Column("job_id", String(36)),
    # starting -> started | failed_to_start; or skipped
    Column("status", String(16), nullable=False),
    Column("reason", Text),
    Column("created_at", Double, nullable=False),
    # when a scheduler last took this run on (recovery of runs whose submitter died)
    Column("claimed_at", Double, nullable=False),
    UniqueConstraint("cron_id", "scheduled_for"),
    Index("ix_cron_runs_status", "status", "claimed_at"),
)

# --- workspaces and uploaded files (issues 4 and 5; migration 0003) ---------------------------

# Jobs are looked up by workspace for "one sandbox per workspace" and for listings.
Index("ix_jobs_user_workspace", jobs.c.user_id, jobs.c.workspace_id)

workspaces = Table(
    "workspaces",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(63), nullable=False),
    # the agent-side key "u<user id>-<name>"; objects live under "ws/<key>/"
    Column("key", String(100), nullable=False, unique=True),
    Column("mode", String(16), nullable=False),  # local | persistent (never downgraded)
    Column("disk_gb", Integer, nullable=False),
    Column("base_id", Integer, ForeignKey("workspaces.id"), index=True),
    # read-only layers frozen when the fork was created: [{workspace_id (key), snapshot_id}], topmost first
    Column("layers", JSON, nullable=False),
    Column("head_snapshot_id", String(128)),
    Column("generation", Integer, nullable=False, default=0),  # +1 per committed snapshot
    Column("agent_id", String(64)),  # where the local copy lives (local) / was last used (cache)
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    Column("last_used_at", Double),
    Column("last_synced_at", Double),
    Column("expires_at", Double),  # local workspaces: deleted after this (null while in use)
    Column("gc_due_at", Double),  # object-store GC worth running from then on
    Column("last_gc_at", Double),
    Column("deleting_at", Double),  # set while a delete is in progress
    UniqueConstraint("user_id", "name"),
)

files = Table(
    "files",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("name", String(255), nullable=False),  # sanitized basename
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("created_at", Double, nullable=False),
    Column("expires_at", Double, nullable=False, index=True),
)

# --- SSH gateway (issue 7; migration 0005): public keys issued by POST /mags-jobs/{id}/access
ssh_keys = Table(
    "ssh_keys",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # "SHA256:<base64>" of the public key: how the gateway finds the key a client offers
    Column("fingerprint", String(64), nullable=False, unique=True),
    Column("public_key", Text, nullable=False),  # "ssh-ed25519 AAAA..." (no comment)
    # the one sandbox this key opens; rows go when the job's VM stops
    Column("job_id", String(36), ForeignKey("jobs.request_id", ondelete="CASCADE"), nullable=False, index=True),
    Column("vm_id", String(32), nullable=False),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", Double, nullable=False),
)

# --- public URLs and URL aliases (issue 6; migration 0004) ------------------------------------

# One row per job with a public URL: its subdomain never changes for the job.
job_urls = Table(
    "job_urls",
    metadata,
    Column("job_id", String(36), ForeignKey("jobs.request_id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("subdomain", String(63), nullable=False, unique=True),
    Column("port", Integer, nullable=False),  # what <subdomain> serves: the port enabled last
    Column("ports", JSON, nullable=False),  # every enabled port, also reachable as <subdomain>-<port>
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
)

# A stable name <subdomain>.<apps_domain> for a user's workspace: follows its current job.
url_aliases = Table(
    "url_aliases",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("subdomain", String(63), nullable=False, unique=True),  # unique across tenants
    Column("workspace_id", String(63), nullable=False),
    Column("domain", String(253), nullable=False),
    Column("port", Integer, nullable=False),  # used when the current job has no URL of its own
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
)
