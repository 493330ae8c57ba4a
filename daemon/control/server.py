"""The daemon's port: HTTP/1.1 (h11) and the WebSocket endpoint ``ws://HOST:PORT/api/v1/control`` (PROTOCOL.md section 1).

The server accepts TCP itself and reads each request with h11
(``http.HttpConnection``). A WebSocket upgrade is decided before any message
is read: wrong path 404, wrong or missing bearer token 401 (compared in
constant time), a browser ``Origin`` not on the allowlist 403, too many
connections (or shutting down) 503, a malformed upgrade 400; every answer
carries ``X-Compositord-Protocol: 1``. An accepted upgrade is handed to
wsproto (``websocket.accept_upgrade``) and runs as one :class:`Connection`.
Any other request is answered by the router (``router.py``, the table in
:meth:`ControlServer.routes`).

Bounded: at most ``max_connections`` WebSocket connections, and at most
``MAX_HTTP_STREAMS`` more TCP connections on their way to one (or asking
plain HTTP); past that a new TCP connection is closed at once. A request must
arrive within ``HTTP_READ_TIMEOUT`` and every answer leave within the send
timeout.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from urllib.parse import parse_qs, urlsplit

import h11
import trio
from wsproto.utilities import RemoteProtocolError as WebSocketHandshakeError

from compositord.daemon.control.connection import CLOSE_GOING_AWAY, Connection, ConnectionLimits, Dispatcher
from compositord.daemon.control.http import PROTOCOL_VERSION_HEADER, HttpConnection, HttpRequest, HttpResponse
from compositord.daemon.control.partial_budget import PartialMessageBudget
from compositord.daemon.control.router import Handler, Router
from compositord.daemon.control.websocket import ServerWebSocket, accept_upgrade, remote_of
from compositord.protocol.envelope import CONTROL_PATH

log = logging.getLogger(__name__)

# A client has this long to send a request (the handshake, or the next one on a kept-alive connection).
HTTP_READ_TIMEOUT = 10.0
# TCP connections beyond the WebSocket limit that may be reading or answering HTTP at once.
MAX_HTTP_STREAMS = 64


@dataclass(frozen=True)
class ServerOptions:
    host: str = "127.0.0.1"
    port: int = 4545
    token: str | None = None
    allowed_origins: frozenset[str] = field(default_factory=frozenset)
    max_connections: int = 256
    max_binary_bytes: int = 32 * 1024 * 1024
    # Messages still arriving, all connections together (partial_budget.py): eight pushed 4K RGBA frames at once.
    max_partial_bytes: int = 256 * 1024 * 1024
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
    """Accepts TCP connections: WebSocket clients run as a :class:`Connection` served by ``dispatcher``,
    plain HTTP requests are answered by :meth:`routes`."""

    def __init__(self, options: ServerOptions, dispatcher: Dispatcher) -> None:
        self.options = options
        self._dispatcher = dispatcher
        self._connections: set[Connection] = set()
        self._no_connections = trio.Event()
        self._no_connections.set()
        self._accepting = True
        self._streams = 0  # open TCP connections, WebSocket or not
        # Upgrades accepted and still being answered (their 101 on its way): they count against
        # max_connections from the check on, or handshakes arriving together would all pass it.
        self._upgrading = 0
        self._router = Router(self.routes())
        self.partial_messages = PartialMessageBudget(options.max_partial_bytes)

    @property
    def connections(self) -> frozenset[Connection]:
        return frozenset(self._connections)

    def routes(self) -> dict[tuple[str, str], Handler]:
        """Plain HTTP: ``(method, path) -> handler``. The web panel's files, ``/metrics`` and ``/healthz`` go here."""
        return {("GET", CONTROL_PATH): _upgrade_required}

    async def run(self, *, task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; ``task_status.started((host, port))`` once bound."""
        listeners = await trio.open_tcp_listeners(self.options.port, host=self.options.host)
        address = listeners[0].socket.getsockname()
        host, port = str(address[0]), int(address[1])
        log.info("serving ws://%s:%d%s", host, port, CONTROL_PATH)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.partial_messages.run)
            await nursery.start(partial(trio.serve_listeners, self._serve_stream, listeners))
            task_status.started((host, port))

    async def _serve_stream(self, stream: trio.SocketStream) -> None:
        # trio.serve_listeners lets a handler's exception end the whole server: one connection's
        # failure is logged here and ends only that connection.
        if self._streams >= self.options.max_connections + MAX_HTTP_STREAMS:
            await trio.aclose_forcefully(stream)
            return
        self._streams += 1
        try:
            await self._serve_requests(stream)
        except Exception:
            log.exception("connection from %s failed", remote_of(stream))
        finally:
            self._streams -= 1
            await trio.aclose_forcefully(stream)

    async def _serve_requests(self, stream: trio.SocketStream) -> None:
        connection = HttpConnection(stream, read_timeout=HTTP_READ_TIMEOUT, write_timeout=self.options.limits.send_timeout)
        while True:
            request = await connection.next_request()
            if request is not None and "websocket" in request.header_tokens("upgrade"):
                if await self._upgrade(stream, connection, request):
                    return  # the WebSocket connection ran and closed its stream
                await connection.finish()
                return
            if request is None or not await connection.respond(await self._router.answer(request)):
                await connection.finish()
                return

    async def _upgrade(self, stream: trio.SocketStream, http: HttpConnection, request: HttpRequest) -> bool:
        """Refuse the upgrade (False) or run the WebSocket connection it opens until it closes (True)."""
        remote = remote_of(stream)
        refusal = check_handshake(request.target, request.headers, self.options, len(self._connections) + self._upgrading)
        if refusal is None and not self._accepting:
            refusal = Refusal(503, "shutting down")
        if refusal is None:
            try:
                protocol, accepted = accept_upgrade(list(request.headers), request.target, [PROTOCOL_VERSION_HEADER])
            except (WebSocketHandshakeError, h11.LocalProtocolError) as exc:
                refusal = Refusal(400, f"not a WebSocket handshake: {exc}")
        if refusal is not None:
            log.info("refused %s: %d %s", remote, refusal.status, refusal.reason)
            await http.respond(HttpResponse.text(refusal.status, refusal.reason, [("connection", "close")]))
            return False
        self._upgrading += 1  # no checkpoint between the check and here
        try:
            with trio.move_on_after(self.options.limits.send_timeout) as scope:
                try:
                    await stream.send_all(accepted)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return True  # the client is gone: nothing to finish
            if scope.cancelled_caught:
                return True
        finally:
            self._upgrading -= 1
        limits = self.options.limits
        websocket = ServerWebSocket(
            stream,
            protocol,
            max_text_bytes=limits.max_text_bytes,
            max_binary_bytes=self.options.max_binary_bytes,
            control_timeout=limits.close_timeout,
            trailing_data=http.trailing_data(),
            partial_budget=self.partial_messages,
        )
        connection = Connection(websocket, limits, remote=remote)
        self._connections.add(connection)
        if self._no_connections.is_set():
            self._no_connections = trio.Event()
        if not self._accepting:
            connection.close(CLOSE_GOING_AWAY, "server shutting down")  # close_all ran while its 101 was on its way
        try:
            self._dispatcher.connection_opened(connection)
            await connection.run(self._dispatcher)
        finally:
            self._connections.discard(connection)
            if not self._connections:
                self._no_connections.set()
        return True

    async def close_all(self, code: int = CLOSE_GOING_AWAY, reason: str = "server shutting down") -> None:
        """Stop accepting, close every connection with ``code`` and wait until they are gone."""
        self._accepting = False
        for connection in list(self._connections):
            connection.close(code, reason)
        await self._no_connections.wait()


async def _upgrade_required(request: HttpRequest) -> HttpResponse:
    return HttpResponse.text(426, f"{CONTROL_PATH} is a WebSocket endpoint", [("upgrade", "websocket")])
