"""Streaming access to a sandbox over WebSockets: interactive processes and TCP tunnels.

``WS /v1/sandboxes/{id}/attach`` — the client's first message is JSON
``{"command": str | [argv] | null, "pty": bool, "rows": int, "cols": int, "env": {}, "cwd": "/root"}``
(null command: a login shell).  Then:

* client → agent: binary = stdin bytes; JSON ``{"type": "resize", "rows", "cols"}``,
  ``{"type": "signal", "signal": N}``, ``{"type": "eof"}``;
* agent → client: binary ``b"\\x01" + stdout`` / ``b"\\x02" + stderr``; JSON
  ``{"type": "started", "pid"}`` then ``{"type": "exit", "exit_code", "signal"}``, then close.

``WS /v1/sandboxes/{id}/connect?port=N`` — a TCP connection, opened by the agent (on the
sandbox's host) to ``sandbox-ip:N``, carried as binary messages both ways.

Both wake a sleeping sandbox and count as activity for its idle timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from mags.errors import MagsError
from mags.runtime.protocol import ExitStatus, Output

if TYPE_CHECKING:
    from mags.agent.service import AgentService, Tracked

STDOUT, STDERR = b"\x01", b"\x02"
LOGIN_SHELL = ["/bin/sh", "-c", 'if [ -x /bin/bash ]; then exec /bin/bash -l; else exec /bin/sh -l; fi']


async def _reject(ws: WebSocket, exc: Exception) -> None:
    await ws.accept()
    await ws.send_text(json.dumps({"type": "error", "error": str(exc)}))
    await ws.close(code=1011 if not isinstance(exc, MagsError) or exc.status_code >= 500 else 4000 + min(exc.status_code, 999))


def _touch(t: Tracked) -> None:
    t.last_activity = time.time()


async def attach(service: AgentService, sandbox_id: str, ws: WebSocket) -> None:
    try:
        t = service._get(sandbox_id)
        sb = await service.ensure_awake(t, "woken by SSH")
    except Exception as exc:  # noqa: BLE001 - reported to the client, then closed
        await _reject(ws, exc)
        return
    await ws.accept()
    try:
        first: dict[str, Any] = json.loads(await ws.receive_text())
    except (WebSocketDisconnect, ValueError):
        await ws.close(code=1002)
        return
    cmd = first.get("command")
    argv = LOGIN_SHELL if not cmd else (["/bin/sh", "-c", cmd] if isinstance(cmd, str) else [str(a) for a in cmd])
    pty = bool(first.get("pty"))
    try:
        proc = await sb.spawn(
            argv, {str(k): str(v) for k, v in (first.get("env") or {}).items()}, str(first.get("cwd") or "/root"),
            pty=pty, stdin=True, rows=int(first.get("rows") or 24), cols=int(first.get("cols") or 80),
        )
    except Exception as exc:  # noqa: BLE001
        await ws.send_text(json.dumps({"type": "error", "error": str(exc)}))
        await ws.close(code=1011)
        return
    _touch(t)
    await ws.send_text(json.dumps({"type": "started", "pid": proc.pid}))

    async def pump_in() -> None:
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                return
            _touch(t)
            if msg.get("bytes") is not None:
                await proc.write(msg["bytes"])
            elif msg.get("text"):
                ctl = json.loads(msg["text"])
                kind = ctl.get("type")
                if kind == "resize":
                    await proc.resize(int(ctl["rows"]), int(ctl["cols"]))
                elif kind == "signal":
                    await proc.signal(int(ctl["signal"]))
                elif kind == "eof":
                    await proc.close_stdin()

    reader = asyncio.get_running_loop().create_task(pump_in())
    status: ExitStatus | None = None
    try:
        async for ev in proc.events():
            if isinstance(ev, Output):
                _touch(t)
                await ws.send_bytes((STDOUT if ev.stream == "stdout" else STDERR) + ev.data)
            elif status is None:
                status = ev
                break
        if status is None:
            status = ExitStatus(137, 9)
        for err in proc.errors:
            await ws.send_bytes(STDERR + err.encode() + b"\n")
        await ws.send_text(json.dumps({"type": "exit", "exit_code": status.exit_code, "signal": status.signal}))
        await ws.close()
    except (WebSocketDisconnect, RuntimeError):
        # the client went away: end the process it was attached to
        with contextlib.suppress(MagsError):
            await proc.signal(9)
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader


async def connect(service: AgentService, sandbox_id: str, port: int, ws: WebSocket) -> None:
    try:
        if not 1 <= port <= 65535:
            raise MagsError(f"bad port {port}", status_code=400)
        t = service._get(sandbox_id)
        sb = await service.ensure_awake(t, "woken by a connection")
        reader, writer = await asyncio.wait_for(asyncio.open_connection(sb.ip, port), 10)
    except (OSError, TimeoutError) as exc:
        await _reject(ws, MagsError(f"nothing listens on port {port} in the sandbox ({exc})", status_code=502))
        return
    except Exception as exc:  # noqa: BLE001
        await _reject(ws, exc)
        return
    await ws.accept()
    _touch(t)

    async def up() -> None:
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                break
            data = msg.get("bytes")
            if data:
                _touch(t)
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()

    up_task = asyncio.get_running_loop().create_task(up())
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            _touch(t)
            await ws.send_bytes(data)
        await ws.close()
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass
    finally:
        up_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await up_task
        writer.close()
