"""Validation of job submissions (``POST /mags-jobs``) and job updates (``PATCH``).

Every rule answers 400 with a sentence saying what to change (413 for sizes).  Fields the
contract lists but this server cannot honour yet are refused, never silently ignored.
Ownership checks (files, base workspaces: 404) happen at submission, not here.
"""

from __future__ import annotations

import re
from typing import Any

from mags.api.params import reject_unknown
from mags.config import Settings
from mags.core.ids import new_request_id
from mags.core.jobs import NewJob
from mags.errors import PayloadTooLarge, ValidationError

JOB_FIELDS = frozenset(
    {
        "script",
        "type",
        "name",
        "workspace_id",
        "base_workspace_id",
        "persistent",
        "no_sleep",
        "no_sync",
        "ephemeral",
        "startup_command",
        "environment",
        "file_ids",
        "disk_gb",
        "rootfs_type",
        "timeout_s",  # a mags extension: the script's wall-clock limit (mags run --timeout)
    }
)
PATCH_FIELDS = frozenset({"startup_command", "no_sleep"})
KNOWN_IMAGES = ("standard",)

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_ENV_VARS = 1000
MAX_ENV_BYTES = 256 * 1024
MAX_FILE_IDS = 100
MAX_TIMEOUT_S = 366 * 86400  # timeout_s when max_job_seconds is 0 (no server limit)
EXEC_FIELDS = frozenset({"command", "timeout"})


def _opt_bool(body: dict[str, Any], key: str) -> bool:
    value = body.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ValidationError(f"{key} must be true or false")
    return value


def _opt_name(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise ValidationError(
            f"{key} must be 1-63 characters of letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def _text(value: Any, key: str, limit: int) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"{key} must be a string")
    if "\x00" in value:
        raise ValidationError(f"{key} must not contain NUL characters")
    if len(value.encode("utf-8", "surrogatepass")) > limit:
        raise PayloadTooLarge(f"{key} is larger than {limit} bytes")
    return value


def parse_startup_command(value: Any, settings: Settings) -> str | None:
    if value is None or value == "":
        return None
    return _text(value, "startup_command", settings.max_script_bytes)


def parse_environment(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    message = "environment must be an object of string to string"
    if not isinstance(value, dict):
        raise ValidationError(message)
    if len(value) > MAX_ENV_VARS:
        raise ValidationError(f"environment has more than {MAX_ENV_VARS} variables")
    size = 0
    for key, val in value.items():
        if not isinstance(val, str):
            raise ValidationError(f"{message} (value of {key} is not a string)")
        if not ENV_KEY_RE.fullmatch(key):
            raise ValidationError(
                f"environment variable name {key!r} is invalid: use letters, digits and '_', "
                "not starting with a digit"
            )
        if "\x00" in val:
            raise ValidationError(f"environment variable {key} must not contain NUL characters")
        size += len(key) + len(val.encode("utf-8", "surrogatepass")) + 2
    if size > MAX_ENV_BYTES:
        raise PayloadTooLarge(f"environment is larger than {MAX_ENV_BYTES} bytes")
    return dict(value)


def _required_text(body: dict[str, Any], name: str, limit: int) -> str:
    """``body[name]``: present, a string within ``limit`` bytes, not blank."""
    value = body.get(name)
    if value is None:
        raise ValidationError(f"{name} is required")
    value = _text(value, name, limit)
    if not value.strip():
        raise ValidationError(f"{name} must not be empty")
    return value


def parse_timeout(value: Any, settings: Settings) -> float | None:
    """``timeout_s``: seconds, 1 up to ``max_job_seconds`` (0 there: no upper limit); null: default."""
    if value is None:
        return None
    top = settings.max_job_seconds or MAX_TIMEOUT_S
    if isinstance(value, bool) or not isinstance(value, int | float) or not 1 <= value <= top:  # also NaN
        raise ValidationError(
            f"timeout_s must be a number of seconds between 1 and {top} (the server's limit)"
        )
    return float(value)


def parse_new_job(body: dict[str, Any], settings: Settings) -> NewJob:
    """Validate a submission; returns the job to store."""
    reject_unknown(body, JOB_FIELDS)
    script = _required_text(body, "script", settings.max_script_bytes)

    job_type = body.get("type")
    if job_type not in (None, "", "inline"):
        raise ValidationError('type must be "inline"')

    name = _opt_name(body, "name")
    workspace_id = _opt_name(body, "workspace_id")
    base_workspace_id = _opt_name(body, "base_workspace_id")
    persistent = _opt_bool(body, "persistent")
    no_sleep = _opt_bool(body, "no_sleep")
    no_sync = _opt_bool(body, "no_sync")
    ephemeral = _opt_bool(body, "ephemeral")
    startup_command = parse_startup_command(body.get("startup_command"), settings)
    environment = parse_environment(body.get("environment"))

    file_ids = body.get("file_ids")
    if file_ids is None:
        file_ids = []
    if not isinstance(file_ids, list) or not all(isinstance(f, str) and f for f in file_ids):
        raise ValidationError("file_ids must be a list of strings")
    file_ids = list(dict.fromkeys(file_ids))  # the same upload twice is placed once
    if len(file_ids) > MAX_FILE_IDS:
        raise ValidationError(f"at most {MAX_FILE_IDS} file_ids per job")

    disk_gb = body.get("disk_gb")
    if disk_gb is not None and (
        isinstance(disk_gb, bool) or not isinstance(disk_gb, int) or not 1 <= disk_gb <= settings.max_disk_gb
    ):
        raise ValidationError(f"disk_gb must be an integer between 1 and {settings.max_disk_gb}")

    timeout_s = parse_timeout(body.get("timeout_s"), settings)

    rootfs_type = body.get("rootfs_type")
    if rootfs_type is None or rootfs_type == "":
        rootfs_type = "standard"
    if rootfs_type not in KNOWN_IMAGES:
        raise ValidationError(f"rootfs_type must be one of: {', '.join(KNOWN_IMAGES)}")

    if ephemeral:
        clash = [
            k
            for k, v in (
                ("workspace_id", workspace_id),
                ("persistent", persistent),
                ("base_workspace_id", base_workspace_id),
            )
            if v
        ]
        if clash:
            raise ValidationError(f"ephemeral cannot be combined with {' or '.join(clash)}")
    if no_sleep and not persistent:
        raise ValidationError("no_sleep requires persistent")
    if base_workspace_id and base_workspace_id == workspace_id:
        raise ValidationError("a workspace cannot be its own base")

    request_id = new_request_id()
    if persistent and workspace_id is None:
        # `mags run -p` without -w: the VM still needs a workspace to keep; name it after the
        # job's name, or after the job itself
        workspace_id = name or f"job-{request_id[:8]}"

    return NewJob(
        request_id=request_id,
        script=script,
        name=name,
        workspace_id=workspace_id,
        base_workspace_id=base_workspace_id,
        persistent=persistent,
        no_sleep=no_sleep,
        no_sync=no_sync,
        ephemeral=ephemeral,
        startup_command=startup_command,
        environment=environment,
        file_ids=file_ids,
        disk_gb=disk_gb,
        rootfs_type=rootfs_type,
        timeout_s=timeout_s,
    )


def parse_job_update(body: dict[str, Any], settings: Settings, persistent: bool) -> dict[str, Any]:
    """Validate a PATCH; returns the columns to change."""
    unknown = sorted(set(body) - PATCH_FIELDS)
    if unknown:
        raise ValidationError(
            f"unknown field{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)} "
            "(only startup_command and no_sleep can be changed)"
        )
    values: dict[str, Any] = {}
    if "startup_command" in body:
        values["startup_command"] = parse_startup_command(body["startup_command"], settings)
    if "no_sleep" in body:
        no_sleep = body["no_sleep"]
        if not isinstance(no_sleep, bool):
            raise ValidationError("no_sleep must be true or false")
        if no_sleep and not persistent:
            raise ValidationError("no_sleep requires a persistent job")
        values["no_sleep"] = no_sleep
    if not values:
        raise ValidationError("nothing to update: send startup_command and/or no_sleep")
    return values


def parse_exec(body: dict[str, Any], settings: Settings) -> tuple[str, float]:
    """Validate ``POST /mags-jobs/{id}/exec``: ``command`` (non-empty), ``timeout`` > 0 s (30).

    A timeout above ``max_exec_timeout_s`` is lowered to it, not refused: the published SDK's
    ``exec(..., timeout=N)`` only bounded its own SSH call, so existing scripts send any N.
    """
    reject_unknown(body, EXEC_FIELDS)
    command = _required_text(body, "command", settings.max_script_bytes)
    timeout = body.get("timeout")
    if timeout is None:
        timeout = 30
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not 1 <= timeout < float("inf")  # also rejects NaN
    ):
        raise ValidationError("timeout must be a number of seconds, at least 1")
    return command, float(min(timeout, settings.max_exec_timeout_s))
