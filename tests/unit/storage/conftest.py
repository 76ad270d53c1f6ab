"""Fixtures for storage unit tests: a local object store and per-test cache dirs."""

from __future__ import annotations

from pathlib import Path

import pytest

from mags.storage.local import LocalObjectStore


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "objects")


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    """The host cache of "this host"."""
    return tmp_path / "cache"


@pytest.fixture
def upper(tmp_path: Path) -> Path:
    path = tmp_path / "upper"
    path.mkdir()
    return path
