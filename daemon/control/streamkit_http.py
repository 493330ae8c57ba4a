"""StreamKit's side of the port: its HTTP API routes, and the dialect a WebSocket client asks for.

StreamKit's web UI lists sessions and node kinds over HTTP before it opens
the control WebSocket (docs/PROTOCOL.md, "StreamKit clients"):

- ``GET /api/v1/sessions``: ``[{"id", "name", "created_at"}]``, the running sessions;
- ``GET /api/v1/schema/nodes``: ``[NodeDefinition]``, each node kind with its
  params as JSON Schema (``protocol.streamkit.node_definitions``);
- ``GET /api/v1/schema/packets``: ``[PacketTypeMeta]`` (the UI loads it with
  the node schemas and fails without it).

Each answers JSON and passes the same token and Origin checks as the
WebSocket handshake (``server.check_access``: 401, 403). The shapes are
StreamKit's, made in :mod:`compositord.protocol.streamkit`.

A WebSocket client asks for StreamKit's dialect with the query parameter
``compat=streamkit`` (a browser cannot set headers on a WebSocket; StreamKit's
UI takes its WebSocket URL from ``VITE_WS_URL``) or the header
``X-Compositord-Compat: streamkit``; :func:`requested_dialect` reads it.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable
from urllib.parse import parse_qs, urlsplit

from compositord.daemon.control.http import HttpRequest, HttpResponse
from compositord.daemon.control.router import Handler
from compositord.protocol import streamkit

SESSIONS_PATH = "/api/v1/sessions"
NODE_SCHEMAS_PATH = "/api/v1/schema/nodes"
PACKET_SCHEMAS_PATH = "/api/v1/schema/packets"


class _Refused(Protocol):
    @property
    def status(self) -> int: ...

    @property
    def reason(self) -> str: ...


Authorize = Callable[[str, Iterable[tuple[bytes, bytes]]], "_Refused | None"]
"""``(target, headers) -> refusal or None``: the port's token and Origin rules."""


@runtime_checkable
class SessionDirectory(Protocol):
    """What lists the running sessions (the daemon's session service)."""

    def session_infos(self) -> list[dict[str, Any]]:
        """StreamKit's ``SessionInfo`` of every running session."""


def requested_dialect(target: str, headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The dialect the request asks for (query first, then header); None for compositord's own.

    Raises ``ValueError`` naming the value for a dialect this daemon does not speak (or two different ones).
    """
    asked = set(parse_qs(urlsplit(target).query).get(streamkit.COMPAT_QUERY, []))
    header = streamkit.COMPAT_HEADER.lower().encode("ascii")
    asked |= {value.decode("latin-1").strip().lower() for name, value in headers if name.lower() == header}
    if not asked:
        return None
    if len(asked) > 1:
        raise ValueError(f"asks for more than one dialect: {', '.join(sorted(asked))}")
    dialect = asked.pop()
    if dialect not in streamkit.DIALECTS:
        raise ValueError(f"unknown {streamkit.COMPAT_QUERY} dialect {dialect!r}; known: {', '.join(streamkit.DIALECTS)}")
    return dialect


def routes(authorize: Authorize, directory: object) -> dict[tuple[str, str], Handler]:
    """The routes; ``GET /api/v1/sessions`` only when ``directory`` is a :class:`SessionDirectory`."""
    table: dict[tuple[str, str], Handler] = {
        # The schemas never change while the daemon runs: made once.
        ("GET", NODE_SCHEMAS_PATH): _json_handler(authorize, functools.cache(streamkit.node_definitions)),
        ("GET", PACKET_SCHEMAS_PATH): _json_handler(authorize, functools.cache(streamkit.packet_types)),
    }
    if isinstance(directory, SessionDirectory):
        table[("GET", SESSIONS_PATH)] = _json_handler(authorize, directory.session_infos)
    return table


def _json_handler(authorize: Authorize, answer: Callable[[], Any]) -> Handler:
    async def handle(request: HttpRequest) -> HttpResponse:
        refusal = authorize(request.target, request.headers)
        if refusal is not None:
            return HttpResponse.text(refusal.status, refusal.reason)
        body = json.dumps(answer(), separators=(",", ":"), allow_nan=False).encode("utf-8")
        return HttpResponse(200, body, (("cache-control", "no-store"),), "application/json")

    return handle
