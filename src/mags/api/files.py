"""``POST /mags-files``: a multipart upload (field ``file``), streamed to disk, at most 100 MB.

The body is parsed as it arrives (python-multipart's streaming parser over
``request.stream()``): the file's bytes go to ``<data_dir>/files/.<file_id>.part`` (0600) in
~1 MiB writes made in a worker thread, so neither the event loop nor memory ever holds the
whole file.  The size limit is enforced while streaming; past it the answer is 413 and the
partial file is deleted.  Complete uploads are renamed to ``<file_id>`` and recorded.
"""

# No `from __future__ import annotations` here: FastAPI must see the route annotations
# (the local `Me` alias) as objects, not strings it cannot resolve.

import asyncio
import hashlib
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from mags.core.files import FileStore, new_file_id, sanitize_filename
from mags.core.ids import iso
from mags.core.tokens import Principal
from mags.errors import PayloadTooLarge, ValidationError

MAX_FILE_BYTES = 100 * 1024 * 1024
MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers around the file
FLUSH_BYTES = 1024 * 1024
# after the limit is hit, read (and drop) this much more so the client gets to see our 413
# instead of a connection reset mid-send; a bigger body is cut off
DRAIN_BYTES = 16 * 1024 * 1024
FIELD = "file"


class _Upload:
    """Parser callbacks: collect the ``file`` part into a bounded buffer, count, hash."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.headers: dict[bytes, bytes] = {}
        self._field = bytearray()
        self._value = bytearray()
        self.in_file = False
        self.seen_file = False
        self.filename: str | None = None
        self.size = 0
        self.too_big = False
        self.sha = hashlib.sha256()
        self.buffer = bytearray()
        self.done = False

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda d, s, e: self._field.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self._value.extend(d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self.headers = {}

    def _header_end(self) -> None:
        self.headers[bytes(self._field).lower()] = bytes(self._value)
        self._field.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self.headers.get(b"content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        self.in_file = name == FIELD and not self.seen_file  # a second "file" part is ignored
        if self.in_file:
            self.seen_file = True
            raw = params.get(b"filename")
            self.filename = raw.decode("utf-8", "replace") if raw is not None else None

    def _data(self, data: bytes, start: int, end: int) -> None:
        if not self.in_file or self.too_big:
            return
        self.size += end - start
        if self.size > self.limit:
            self.too_big = True
            self.buffer.clear()
            return
        chunk = data[start:end]
        self.sha.update(chunk)
        self.buffer.extend(chunk)

    def _part_end(self) -> None:
        self.in_file = False

    def _end(self) -> None:
        self.done = True


def _boundary(request: Request) -> bytes:
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise ValidationError('send the file as multipart/form-data with a field named "file"')
    return boundary


def _open_partial(path: Path) -> int:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


async def receive_file(request: Request, partial: Path, limit: int) -> _Upload:
    """Stream the multipart body into ``partial``; raises 400/413 (the caller cleans up)."""
    boundary = _boundary(request)
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit + MULTIPART_OVERHEAD:
        raise PayloadTooLarge(f"file is larger than {limit} bytes")
    up = _Upload(limit)
    try:
        parser = MultipartParser(boundary, up.callbacks())
    except Exception as exc:
        raise ValidationError(f"bad multipart boundary: {exc}") from exc
    fd = await asyncio.to_thread(_open_partial, partial)
    try:
        drained = 0
        async for chunk in request.stream():
            if up.too_big:
                drained += len(chunk)
                if drained > DRAIN_BYTES:
                    break
                continue
            try:
                parser.write(chunk)
            except (FormParserError, ValueError) as exc:
                raise ValidationError(f"malformed multipart body: {exc}") from exc
            if len(up.buffer) >= FLUSH_BYTES:
                data, up.buffer = bytes(up.buffer), bytearray()
                await asyncio.to_thread(_write_all, fd, data)
        if up.too_big:
            raise PayloadTooLarge(f"file is larger than {limit} bytes (100 MB)")
        if not up.seen_file:
            raise ValidationError('the upload has no field named "file"')
        if not up.done:
            raise ValidationError("the multipart body ended early")
        if up.buffer:
            await asyncio.to_thread(_write_all, fd, bytes(up.buffer))
            up.buffer.clear()
    except ClientDisconnect as exc:
        raise ValidationError("the client went away during the upload") from exc
    finally:
        await asyncio.to_thread(os.close, fd)
    return up


def files_router(files: FileStore, auth: Callable[[Request], Awaitable[Principal]]) -> APIRouter:
    router = APIRouter()
    Me = Annotated[Principal, Depends(auth)]

    @router.post("/mags-files")
    async def upload(request: Request, me: Me) -> JSONResponse:
        file_id = new_file_id()
        final = files.path(file_id)
        partial = final.with_name(f".{file_id}.part")
        try:
            up = await receive_file(request, partial, MAX_FILE_BYTES)
            await asyncio.to_thread(os.replace, partial, final)
        except BaseException:
            await asyncio.shield(asyncio.to_thread(_unlink, partial))  # nothing kept
            raise
        name = sanitize_filename(up.filename)
        try:
            row = await files.add(me.user_id, file_id, name, up.size, up.sha.hexdigest())
        except BaseException:
            await asyncio.shield(asyncio.to_thread(_unlink, final))
            raise
        return JSONResponse(
            {
                "file_id": file_id,
                "name": name,
                "size": up.size,
                "sha256": row["sha256"],
                "created_at": iso(row["created_at"]),
                "expires_at": iso(row["expires_at"]),
            }
        )

    return router


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
