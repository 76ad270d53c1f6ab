"""The public surface: ``mags.__all__``, the published method names and signatures."""

from __future__ import annotations

import inspect
import subprocess
import sys

import mags
from mags import AsyncMags, Mags
from mags.errors import ClientError, MagsError

PUBLISHED_METHODS = [
    "run",
    "run_and_wait",
    "new",
    "exec",
    "stop",
    "find_job",
    "url",
    "resize",
    "status",
    "logs",
    "list_jobs",
    "update_job",
    "enable_access",
    "upload_file",
    "upload_files",
    "list_workspaces",
    "delete_workspace",
    "sync",
    "url_alias_create",
    "url_alias_list",
    "url_alias_delete",
    "cron_create",
    "cron_list",
    "cron_get",
    "cron_update",
    "cron_delete",
    "usage",
]


def test_all_is_exactly_the_public_surface():
    assert sorted(mags.__all__) == sorted(
        [
            "AsyncMags",
            "AuthError",
            "ClientError",
            "Conflict",
            "Mags",
            "MagsError",
            "NotFound",
            "PayloadTooLarge",
            "PermissionDenied",
            "ValidationError",
            "__version__",
        ]
    )
    for name in mags.__all__:
        assert getattr(mags, name) is not None
    assert mags.MagsError is MagsError
    assert issubclass(mags.ClientError, MagsError)
    assert isinstance(mags.__version__, str) and mags.__version__


def test_import_mags_is_light():
    code = (
        "import sys, mags; "
        "heavy = [m for m in ('httpx', 'fastapi', 'sqlalchemy', 'rich', 'pydantic') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_published_methods_exist_on_both_twins_with_same_parameters():
    for name in PUBLISHED_METHODS + ["follow_logs", "follow_events", "wait", "whoami"]:
        sync_sig = inspect.signature(getattr(Mags, name))
        async_sig = inspect.signature(getattr(AsyncMags, name))
        assert list(sync_sig.parameters) == list(async_sig.parameters), name
        for p in sync_sig.parameters.values():
            assert async_sig.parameters[p.name].default == p.default, (name, p.name)
            assert async_sig.parameters[p.name].kind == p.kind, (name, p.name)
        if name not in ("follow_logs", "follow_events"):
            assert inspect.iscoroutinefunction(getattr(AsyncMags, name)), name


def test_published_signatures():
    sig = inspect.signature(Mags.new)
    assert [(p.name, p.default) for p in list(sig.parameters.values())[1:7]] == [
        ("name", inspect.Parameter.empty),
        ("persistent", False),
        ("base_workspace_id", None),
        ("disk_gb", None),
        ("timeout", 30.0),
        ("poll_interval", 1.0),
    ]
    assert inspect.signature(Mags.exec).parameters["timeout"].default == 30
    assert inspect.signature(Mags.url).parameters["port"].default == 8080
    assert inspect.signature(Mags.usage).parameters["window_days"].default == 30
    run = inspect.signature(Mags.run).parameters
    for opt in [
        "name",
        "workspace_id",
        "base_workspace_id",
        "persistent",
        "no_sleep",
        "ephemeral",
        "startup_command",
        "environment",
        "file_ids",
        "disk_gb",
        "no_sync",
    ]:
        assert run[opt].kind is inspect.Parameter.KEYWORD_ONLY
    init = inspect.signature(Mags.__init__).parameters
    assert list(init)[1:4] == ["api_token", "api_url", "timeout"]


def test_client_error_is_the_sdk_error():
    assert issubclass(ClientError, MagsError)
    assert ClientError("x").status_code == 0
