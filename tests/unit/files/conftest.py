"""Fixtures: a control plane on SQLite with the fake agent, and two tenants' clients."""

from scheduler.tenants import agent, alice, bob, cp  # noqa: F401 - fixtures
