"""Shared by the benchmarks in this folder (run as ``python bench/<name>.py``)."""

from __future__ import annotations


def pct(xs: list[float], p: float) -> float:
    """The ``p``-th percentile of ``xs`` (nearest rank)."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]
