"""HTTP client twins: :class:`~mags.sdk.sync.Mags` and :class:`~mags.sdk.aio.AsyncMags`.

Loaded lazily so ``mags.sdk.credentials`` (used by the CLI at start-up) does not pull httpx in.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AsyncMags", "Mags"]

_LAZY = {"Mags": "mags.sdk.sync", "AsyncMags": "mags.sdk.aio"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mags.sdk' has no attribute {name!r}")
