"""The REST API of the control plane (``/api/v1``); see :func:`mags.api.app.create_app`."""

from mags.api.app import create_app

__all__ = ["create_app"]
