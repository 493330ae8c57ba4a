"""The WebSocket endpoint: ``ws://HOST:PORT/api/v1/control`` (PROTOCOL.md section 1).

The handshake decides before any message is read: wrong path 404, wrong or
missing bearer token 401 (compared in constant time), a browser ``Origin`` not
on the allowlist 403, too many connections 503. An accepted connection answers
with ``X-Compositord-Protocol: 1`` and runs as one :class:`Connection`.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import trio
from trio_websocket import WebSocketRequest, WebSocketServer, serve_websocket

from compositord.daemon.control.connection import CLOSE_GOING_AWAY, Connection, ConnectionLimits, Dispatcher

log = logging.getLogger(__name__)

CONTROL_PATH = "/api/v1/control"
PROTOCOL_VERSION = 1
PROTOCOL_HEADER = (b"X-Compositord-Protocol", str(PROTOCOL_VERSION).encode())


@dataclass(frozen=True)
class ServerOptions:
    host: str = "127.0.0.1"
    port: int = 4545
    token: str | None = None
    allowed_origins: frozenset[str] = field(default_factory=frozenset)
    max_connections: int = 256
    max_binary_bytes: int = 32 * 1024 * 1024
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)


@dataclass(frozen=True)
class Refusal:
    status: int
    reason: str


def check_handshake(
    path: str, headers: Iterable[tuple[bytes, bytes]], options: ServerOptions, open_connections: int
) -> Refusal | None:
    """Why this upgrade request is refused, or None to accept it. Pure: tested without sockets."""
    url = urlsplit(path)
    if url.path != CONTROL_PATH:
        return Refusal(404, f"no endpoint at {url.path}; use {CONTROL_PATH}")
    header_map: dict[str, str] = {}
    for name, value in headers:
        header_map.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    if options.token is not None:
        presented = _presented_token(header_map.get("authorization"), url.query)
        # compare_digest on bytes: constant time whatever the characters are.
        if presented is None or not hmac.compare_digest(presented.encode(), options.token.encode()):
            return Refusal(401, "missing or wrong bearer token")
    origin = header_map.get("origin")
    if origin is not None and origin not in options.allowed_origins:
        return Refusal(403, f"origin {origin!r} is not allowed")
    if open_connections >= options.max_connections:
        return Refusal(503, f"connection limit ({options.max_connections}) reached")
    return None


def _presented_token(authorization: str | None, query: str) -> str | None:
    if authorization is not None:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
        return None
    values = parse_qs(query).get("token")
    return values[0] if values else None


class ControlServer:
    """Accepts WebSocket clients and runs each as a :class:`Connection` served by ``dispatcher``."""

    def __init__(self, options: ServerOptions, dispatcher: Dispatcher) -> None:
        self.options = options
        self._dispatcher = dispatcher
        self._connections: set[Connection] = set()
        self._no_connections = trio.Event()
        self._no_connections.set()
        self._accepting = True

    @property
    def connections(self) -> frozenset[Connection]:
        return frozenset(self._connections)

    async def run(self, *, task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; ``task_status.started((host, port))`` once bound."""

        async with trio.open_nursery() as nursery:
            server: WebSocketServer = await nursery.start(
                lambda task_status: serve_websocket(
                    self._handle,
                    self.options.host,
                    self.options.port,
                    None,
                    max_message_size=self.options.max_binary_bytes,
                    message_queue_size=4,
                    connect_timeout=10,
                    disconnect_timeout=self.options.limits.close_timeout,
                    task_status=task_status,
                )
            )
            listener = server.listeners[0]
            host, port = str(listener.address), listener.port  # type: ignore[union-attr]
            log.info("serving ws://%s:%d%s", host, port, CONTROL_PATH)
            task_status.started((host, port))

    async def _handle(self, request: WebSocketRequest) -> None:
        refusal = check_handshake(request.path, request.headers, self.options, len(self._connections))
        if refusal is None and not self._accepting:
            refusal = Refusal(503, "shutting down")
        if refusal is not None:
            log.info("refused %s: %d %s", request.remote, refusal.status, refusal.reason)
            await request.reject(
                refusal.status,
                extra_headers=[PROTOCOL_HEADER, (b"Content-Type", b"text/plain; charset=utf-8")],
                body=refusal.reason.encode() + b"\n",
            )
            return
        websocket = await request.accept(extra_headers=[PROTOCOL_HEADER])
        connection = Connection(websocket, self.options.limits, remote=str(request.remote))
        self._connections.add(connection)
        if self._no_connections.is_set():
            self._no_connections = trio.Event()
        try:
            self._dispatcher.connection_opened(connection)
            await connection.run(self._dispatcher)
        finally:
            self._connections.discard(connection)
            if not self._connections:
                self._no_connections.set()

    async def close_all(self, code: int = CLOSE_GOING_AWAY, reason: str = "server shutting down") -> None:
        """Stop accepting, close every connection with ``code`` and wait until they are gone."""
        self._accepting = False
        for connection in list(self._connections):
            connection.close(code, reason)
        await self._no_connections.wait()
