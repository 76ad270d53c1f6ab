"""mags: self-hosted secure sandboxes for AI agents, compatible with the Mags API, CLI and SDK.

::

    from mags import Mags
    m = Mags()                      # MAGS_API_URL / MAGS_API_TOKEN or ~/.mags/config.json
    print(m.run_and_wait("echo Hello World")["logs"])

``Mags`` and ``AsyncMags`` are imported on first use, so ``import mags`` (and the ``mags``
CLI's start-up) stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mags._version import __version__
from mags.errors import (
    AuthError,
    ClientError,
    Conflict,
    MagsError,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    ValidationError,
)

if TYPE_CHECKING:
    from mags.sdk.aio import AsyncMags
    from mags.sdk.sync import Mags


__all__ = [
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

_LAZY = {"Mags": "mags.sdk.sync", "AsyncMags": "mags.sdk.aio"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mags' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
