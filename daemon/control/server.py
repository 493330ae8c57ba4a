"""The daemon's port: HTTP/1.1 (h11) and the WebSocket endpoint ``ws://HOST:PORT/api/v1/control`` (PROTOCOL.md section 1).

The server accepts TCP itself and reads each request with h11
(``http.HttpConnection``). A WebSocket upgrade is decided before any message
is read: wrong path 404, wrong or missing bearer token 401 (compared in
constant time), a browser ``Origin`` not on the allowlist 403, a dialect it
does not speak 400 (``compat``, ``streamkit_http.py``), too many
connections (or shutting down) 503, a malformed upgrade 400; every answer
carries ``X-Compositord-Protocol: 1``. An accepted upgrade is handed to
wsproto (``websocket.accept_upgrade``) and runs as one :class:`Connection`.
Any other request is answered by the router (``router.py``, the table in
:meth:`ControlServer.routes`): with a token set, every path but the public
ones (the panel's files, ``/healthz``) first needs ``Authorization: Bearer``
(401 otherwise). A browser presents the token as a subprotocol and the
panel's own origin is admitted (``browser_auth.py``).

Bounded: at most ``max_connections`` WebSocket connections, and at most
``MAX_HTTP_STREAMS`` more TCP connections on their way to one (or asking
plain HTTP); past that a new TCP connection is closed at once. A request must
arrive within ``HTTP_READ_TIMEOUT`` and every answer leave within the send
timeout.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from urllib.parse import parse_qs, urlsplit

import h11
import trio
from wsproto.utilities import RemoteProtocolError as WebSocketHandshakeError

from compositord.daemon.control import browser_auth, streamkit_http
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
    path: str,
    headers: Iterable[tuple[bytes, bytes]],
    options: ServerOptions,
    open_connections: int,
    *,
    bound_port: int | None = None,
) -> Refusal | None:
    """Why this upgrade request is refused, or None to accept it. Pure: tested without sockets.

    ``bound_port``: the port the daemon listens on; with it, the daemon's own origin (the panel's) is
    admitted besides ``options.allowed_origins``.
    """
    url = urlsplit(path)
    if url.path != CONTROL_PATH:
        return Refusal(404, f"no endpoint at {url.path}; use {CONTROL_PATH}")
    headers = list(headers)
    refusal = check_access(path, headers, options, bound_port=bound_port)
    if refusal is not None:
        return refusal
    try:
        streamkit_http.requested_dialect(path, headers)
    except ValueError as exc:
        return Refusal(400, str(exc))
    if open_connections >= options.max_connections:
        return Refusal(503, f"connection limit ({options.max_connections}) reached")
    return None


def check_access(
    target: str, headers: Iterable[tuple[bytes, bytes]], options: ServerOptions, *, bound_port: int | None = None
) -> Refusal | None:
    """The bearer token (401) and Origin (403) rules, the same for the WebSocket handshake and the API routes.

    ``bound_port``: the port the daemon listens on; with it, the daemon's own origin (the panel's) is
    admitted besides ``options.allowed_origins``.
    """
    header_map: dict[str, str] = {}
    subprotocol_headers: list[str] = []
    for name, value in headers:
        key = name.decode("latin-1").lower()
        header_map.setdefault(key, value.decode("latin-1"))
        if key == "sec-websocket-protocol":
            subprotocol_headers.append(value.decode("latin-1"))
    if options.token is not None:
        presented = _presented_token(header_map.get("authorization"), urlsplit(target).query, subprotocol_headers)
        if not token_matches(presented, options.token):
            return Refusal(401, "missing or wrong bearer token")
    origin = header_map.get("origin")
    if (
        origin is not None
        and origin not in options.allowed_origins
        and not (bound_port is not None and browser_auth.is_own_origin(origin, header_map.get("host"), options.host, bound_port))
    ):
        return Refusal(403, f"origin {origin!r} is not allowed")
    return None


def token_matches(presented: str | None, token: str) -> bool:
    # compare_digest on bytes: constant time whatever the characters are.
    return presented is not None and hmac.compare_digest(presented.encode(), token.encode())


def bearer_token(authorization: str | None) -> str | None:
    """The credentials of an ``Authorization: Bearer`` header; None for another scheme or none."""
    if authorization is None:
        return None
    scheme, _, credentials = authorization.partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" and credentials.strip() else None


def _presented_token(authorization: str | None, query: str, subprotocol_headers: list[str]) -> str | None:
    """The header decides when there is one; then a browser's token subprotocol; then the ``token`` query parameter."""
    if authorization is not None:
        return bearer_token(authorization)
    from_subprotocol = browser_auth.token_from_subprotocols(browser_auth.offered_subprotocols(subprotocol_headers))
    if from_subprotocol is not None:
        return from_subprotocol
    values = parse_qs(query).get("token")
    return values[0] if values else None


class ControlServer:
    """Accepts TCP connections: WebSocket clients run as a :class:`Connection` served by ``dispatcher``,
    plain HTTP requests are answered by :meth:`routes`."""

    def __init__(
        self,
        options: ServerOptions,
        dispatcher: Dispatcher,
        *,
        routes: Mapping[tuple[str, str], Handler] | None = None,
        public_paths: Iterable[str] = (),
    ) -> None:
        """``routes``: plain HTTP endpoints besides the WebSocket's; ``public_paths``: those that need no token."""
        self.options = options
        self._dispatcher = dispatcher
        self._extra_routes = dict(routes or {})
        self._public_paths = frozenset(public_paths)
        self._bound_port: int | None = None
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
        """Plain HTTP: ``(method, path) -> handler``: the WebSocket path's 426, StreamKit's API
        (``streamkit_http.py``) and the routes given at construction (the panel, ``/metrics``, ``/healthz``)."""
        routes: dict[tuple[str, str], Handler] = {("GET", CONTROL_PATH): _upgrade_required}
        routes.update(streamkit_http.routes(self._check_access, self._dispatcher))
        routes.update(self._extra_routes)
        return routes

    def _check_access(self, target: str, headers: Iterable[tuple[bytes, bytes]]) -> Refusal | None:
        return check_access(target, headers, self.options, bound_port=self._bound_port)

    @property
    def accepting(self) -> bool:
        """False once :meth:`close_all` began (shutting down)."""
        return self._accepting

    async def run(self, *, task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; ``task_status.started((host, port))`` once bound."""
        listeners = await trio.open_tcp_listeners(self.options.port, host=self.options.host)
        address = listeners[0].socket.getsockname()
        host, port = str(address[0]), int(address[1])
        self._bound_port = port
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
            if request is None or not await connection.respond(await self._answer(request)):
                await connection.finish()
                return

    async def _answer(self, request: HttpRequest) -> HttpResponse:
        """The router's answer, once the request passes the WebSocket's own token and Origin rules
        (:func:`check_access`), unless its path is public (the panel's files, ``/healthz``)."""
        if request.path not in self._public_paths:
            refusal = check_access(request.target, request.headers, self.options, bound_port=self._bound_port)
            if refusal is not None:
                challenge = [("www-authenticate", 'Bearer realm="compositord"')] if refusal.status == 401 else []
                return HttpResponse.text(refusal.status, refusal.reason, challenge)
        return await self._router.answer(request)

    async def _upgrade(self, stream: trio.SocketStream, http: HttpConnection, request: HttpRequest) -> bool:
        """Refuse the upgrade (False) or run the WebSocket connection it opens until it closes (True)."""
        remote = remote_of(stream)
        refusal = check_handshake(
            request.target, request.headers, self.options, len(self._connections) + self._upgrading, bound_port=self._bound_port
        )
        if refusal is None and not self._accepting:
            refusal = Refusal(503, "shutting down")
        if refusal is None:
            offered = browser_auth.offered_subprotocols(
                [value.decode("latin-1") for name, value in request.headers if name == b"sec-websocket-protocol"]
            )
            # A browser must get one of the subprotocols it offered back, or it drops the connection.
            subprotocol = browser_auth.SUBPROTOCOL if browser_auth.SUBPROTOCOL in offered else None
            try:
                protocol, accepted = accept_upgrade(
                    list(request.headers), request.target, [PROTOCOL_VERSION_HEADER], subprotocol=subprotocol
                )
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
        dialect = streamkit_http.requested_dialect(request.target, request.headers)  # checked by check_handshake
        connection = Connection(websocket, limits, remote=remote, dialect=dialect)
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
