"""Validation of cron job definitions (``POST /mags-cron``) and changes (``PATCH``).

The job a cron starts is validated by ``parse_new_job`` itself (script, name, workspace,
persistence, environment), so a definition is accepted exactly when the job it submits would
be.  The schedule is validated by ``core/schedule.py``.  ``null`` means "not given": the
default at creation, and back to the default in a PATCH (name, cron_expression and script
cannot be null).
"""

from __future__ import annotations

from typing import Any

from mags.api.job_input import parse_new_job
from mags.api.params import reject_unknown
from mags.config import Settings
from mags.core.cron import OVERLAP_POLICIES, NewCron
from mags.core.jobs import NewJob
from mags.core.schedule import parse_schedule
from mags.errors import ValidationError

CRON_FIELDS = frozenset(
    {
        "name",
        "cron_expression",
        "script",
        "workspace_id",
        "environment",
        "persistent",
        "enabled",
        "timezone",
        "overlap_policy",
    }
)
# the fields that make up the job each run submits
JOB_PART = ("script", "name", "workspace_id", "persistent", "environment")
REQUIRED = ("name", "cron_expression", "script")


def _bool(value: Any, key: str, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ValidationError(f"{key} must be true or false")
    return value


def _policy(value: Any) -> str:
    if value is None or value == "":
        return "skip"
    if value not in OVERLAP_POLICIES:
        raise ValidationError(f"overlap_policy must be one of: {', '.join(OVERLAP_POLICIES)}")
    return str(value)


def _job(values: dict[str, Any], settings: Settings) -> NewJob:
    """Validate the job part as ``POST /mags-jobs`` would."""
    return parse_new_job({k: values.get(k) for k in JOB_PART}, settings)


def _require(body: dict[str, Any], keys: tuple[str, ...]) -> None:
    for key in keys:
        if key in body and (body[key] is None or body[key] == ""):
            example = ", e.g. '0 */2 * * *'" if key == "cron_expression" else ""
            raise ValidationError(f"{key} is required{example}")


def parse_new_cron(body: dict[str, Any], settings: Settings, now: float) -> tuple[NewCron, float | None]:
    """Validate a definition; returns it and its first run time (None while disabled)."""
    reject_unknown(body, CRON_FIELDS)
    for key in REQUIRED:
        body.setdefault(key, None)
    _require(body, REQUIRED)
    schedule = parse_schedule(body["cron_expression"], body.get("timezone"), now=now)
    job = _job(body, settings)
    assert job.name is not None
    cron = NewCron(
        name=job.name,
        cron_expression=schedule.expression,
        timezone=schedule.timezone,
        script=job.script,
        # as given: parse_new_job names the workspace of a persistent job without one after the
        # job, which for a cron run is the cron's name -- worked out again at each run
        workspace_id=job.workspace_id if body.get("workspace_id") else None,
        environment=job.environment,
        persistent=job.persistent,
        enabled=_bool(body.get("enabled"), "enabled", True),
        overlap_policy=_policy(body.get("overlap_policy")),
    )
    return cron, schedule.next_after(now) if cron.enabled else None


def parse_cron_update(body: dict[str, Any], current: Any, settings: Settings, now: float) -> dict[str, Any]:
    """Validate a PATCH against the current row; returns the columns that change.

    A new schedule or time zone, and enabling a disabled job, compute ``next_run_at`` from
    ``now`` (no catch-up of ticks that passed while it was disabled); disabling clears it.
    """
    reject_unknown(body, CRON_FIELDS)
    if not body:
        raise ValidationError(f"nothing to update: send any of {', '.join(sorted(CRON_FIELDS))}")
    _require(body, REQUIRED)
    m = current._mapping
    merged: dict[str, Any] = {key: m[key] for key in CRON_FIELDS}
    merged["persistent"] = bool(merged["persistent"])
    merged["enabled"] = bool(merged["enabled"])
    merged.update(body)

    schedule = parse_schedule(merged["cron_expression"], merged["timezone"], now=now)
    job = _job(merged, settings)
    new = {
        "name": job.name,
        "cron_expression": schedule.expression,
        "timezone": schedule.timezone,
        "script": job.script,
        "workspace_id": job.workspace_id if merged.get("workspace_id") else None,
        "environment": job.environment,
        "persistent": job.persistent,
        "enabled": _bool(merged.get("enabled"), "enabled", True),
        "overlap_policy": _policy(merged.get("overlap_policy")),
    }
    values = {k: v for k, v in new.items() if v != m[k]}
    if not new["enabled"]:
        if m["next_run_at"] is not None:
            values["next_run_at"] = None
    elif not m["enabled"] or m["next_run_at"] is None or "cron_expression" in values or "timezone" in values:
        values["next_run_at"] = schedule.next_after(now)
    return values
