"""Suite-wide hooks: tests marked ``slow`` run only with ``MAGS_SLOW_TESTS=1``.

``slow`` (declared in pyproject.toml) is for tests that download a lot (a few hundred MB of
Debian packages or Python wheels) or take minutes; the default run skips them with the reason.
"""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("MAGS_SLOW_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="slow test: set MAGS_SLOW_TESTS=1 to run it")
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(skip)
