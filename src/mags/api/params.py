"""Reading request bodies and query parameters with messages a person can act on."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from mags.errors import PayloadTooLarge, ValidationError


async def read_json_object(request: Request, limit: int, *, allow_empty: bool = False) -> dict[str, Any]:
    """The request body as a JSON object; 413 over ``limit`` bytes, 400 if not an object."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"request body is too large (limit {limit} bytes)")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is too large (limit {limit} bytes)")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        if allow_empty:
            return {}
        raise ValidationError("request body must be a JSON object")
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationError(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ValidationError("request body must be a JSON object")
    return value


def reject_unknown(body: dict[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        names = ", ".join(unknown)
        raise ValidationError(f"unknown field{'s' if len(unknown) > 1 else ''}: {names}")


def query_int(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError(f"{name} must be an integer between {lo} and {hi}") from None
    if not lo <= value <= hi:
        raise ValidationError(f"{name} must be an integer between {lo} and {hi}")
    return value


def query_float(request: Request, name: str, default: float, lo: float, hi: float) -> float:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValidationError(f"{name} must be a number between {lo:g} and {hi:g}") from None
    if not lo <= value <= hi:  # also rejects NaN
        raise ValidationError(f"{name} must be a number between {lo:g} and {hi:g}")
    return value


def query_bool(request: Request, name: str, default: bool = False) -> bool:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    value = raw.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValidationError(f"{name} must be true or false")
