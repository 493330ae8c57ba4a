"""HTTP/1.1 on the daemon's port, parsed and written by h11.

The WebSocket endpoint and plain HTTP (today: answers that say what is not
there; later the web panel's files, ``/metrics``, ``/healthz``) share one
port and origin (ARCHITECTURE.md, "The HTTP front"). :class:`HttpConnection`
reads each request of a TCP connection (keep-alive) with h11 and writes the
answers; what to answer is the router's business (``router.py``), and an
upgrade to a WebSocket is the server's (``server.py``), which takes over the
stream with :meth:`HttpConnection.trailing_data`.

Bounded: h11 refuses a request head it holds more than 16 KiB of without
its end (431; a head that arrives whole in one read of ``READ_CHUNK`` is
parsed), a body is read and dropped up to ``MAX_BODY_BYTES`` (no route takes
a body yet; past it 413), each request must arrive within the read timeout
and each answer leave within the write timeout, else the connection is
closed. Closing after an answer (:meth:`HttpConnection.finish`) first ends
our side and drains what the client still sends for a moment: a socket
closed with unread data resets the connection, and the client would lose
the answer (a 413, say) before reading it.
"""

from __future__ import annotations

import http
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import h11
import trio

from compositord.protocol.envelope import PROTOCOL_HEADER, PROTOCOL_VERSION

log = logging.getLogger(__name__)

READ_CHUNK = 64 * 1024
MAX_BODY_BYTES = 64 * 1024
# How long, and how much, finish() reads and drops from a client after the last answer.
LINGER_SECONDS = 1.0
LINGER_BYTES = 1024 * 1024
# Every answer names the protocol version (PROTOCOL.md section 7), refusals of the handshake included.
PROTOCOL_VERSION_HEADER = (PROTOCOL_HEADER.encode("ascii"), str(PROTOCOL_VERSION).encode("ascii"))


@dataclass(frozen=True)
class HttpRequest:
    method: str
    target: str  # as sent: path and query
    headers: tuple[tuple[bytes, bytes], ...]  # names lower case (h11)

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), decoded as Latin-1."""
        wanted = name.lower().encode("ascii")
        for key, value in self.headers:
            if key == wanted:
                return value.decode("latin-1")
        return None

    def header_tokens(self, name: str) -> set[str]:
        """The comma-separated tokens of every ``name`` header, lower case (``Connection: keep-alive, Upgrade``)."""
        wanted = name.lower().encode("ascii")
        return {
            token.strip().lower()
            for key, value in self.headers
            if key == wanted
            for token in value.decode("latin-1").split(",")
            if token.strip()
        }


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    content_type: str = "text/plain; charset=utf-8"

    @classmethod
    def text(cls, status: int, message: str, headers: Iterable[tuple[str, str]] = ()) -> HttpResponse:
        """A short plain-text answer (one line)."""
        return cls(status, message.encode("utf-8") + b"\n", tuple(headers))


class HttpConnection:
    """The HTTP/1.1 side of one TCP connection (server role)."""

    def __init__(self, transport: trio.abc.HalfCloseableStream, *, read_timeout: float, write_timeout: float) -> None:
        self._transport = transport
        self._protocol = h11.Connection(h11.SERVER)
        self._read_timeout = read_timeout
        self._write_timeout = write_timeout
        self._request: HttpRequest | None = None

    async def next_request(self) -> HttpRequest | None:
        """The next request, its body read and dropped; None when the connection is over.

        Over: the client closed it, sent nothing within the read timeout, or sent something that is
        not HTTP (answered with h11's status hint, 400 or 431, then closed).
        """
        if self._protocol.our_state is h11.DONE and self._protocol.their_state is h11.DONE:
            self._protocol.start_next_cycle()
        elif self._protocol.our_state is not h11.IDLE:
            return None  # the last exchange left the connection unusable (h11 says MUST_CLOSE)
        self._request = None
        body_bytes = 0
        with trio.move_on_after(self._read_timeout):
            while True:
                try:
                    event = self._protocol.next_event()
                except h11.RemoteProtocolError as exc:
                    await self._refuse(exc.error_status_hint, f"bad request: {exc}")
                    return None
                if event is h11.NEED_DATA:
                    try:
                        data = await self._transport.receive_some(READ_CHUNK)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        return None
                    self._protocol.receive_data(bytes(data))  # b"": the client closed its side
                elif isinstance(event, h11.Request):
                    self._request = HttpRequest(
                        event.method.decode("ascii"), event.target.decode("ascii", "replace"), tuple(event.headers)
                    )
                elif isinstance(event, h11.Data):
                    body_bytes += len(event.data)
                    if body_bytes > MAX_BODY_BYTES:
                        await self._refuse(413, f"request body over {MAX_BODY_BYTES} bytes")
                        return None
                elif isinstance(event, h11.EndOfMessage):
                    return self._request
                else:  # ConnectionClosed, or PAUSED (the client pipelined past a protocol switch)
                    return None
        return None

    def trailing_data(self) -> bytes:
        """What the client sent after the request (the start of a WebSocket stream, after an upgrade)."""
        data, _closed = self._protocol.trailing_data
        return bytes(data)

    async def respond(self, response: HttpResponse) -> bool:
        """Send ``response`` to the current request; True when the connection can take another request."""
        body = response.body
        headers = [
            (b"content-type", response.content_type.encode("latin-1")),
            (b"content-length", str(len(body)).encode("ascii")),
            PROTOCOL_VERSION_HEADER,
            *((name.encode("latin-1"), value.encode("latin-1")) for name, value in response.headers),
        ]
        try:
            phrase = http.HTTPStatus(response.status).phrase.encode("ascii")
        except ValueError:
            phrase = b""
        try:
            data = self._protocol.send(h11.Response(status_code=response.status, headers=headers, reason=phrase)) or b""
            if self._request is None or self._request.method != "HEAD":  # a HEAD answer has the length, not the body
                data += self._protocol.send(h11.Data(data=body)) or b""
            data += self._protocol.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError as exc:  # our own bug: say so in the log, close the connection
            log.error("cannot answer %s: %s", self._request, exc)
            return False
        with trio.move_on_after(self._write_timeout) as scope:
            try:
                await self._transport.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return False
        if scope.cancelled_caught:
            return False
        return self._protocol.our_state is h11.DONE and self._protocol.their_state is h11.DONE

    async def finish(self) -> None:
        """End the connection gently: our side first, then drop what the client still sends (bounded)."""
        with trio.move_on_after(LINGER_SECONDS):
            try:
                await self._transport.send_eof()
                dropped = 0
                while dropped < LINGER_BYTES:
                    data = await self._transport.receive_some(READ_CHUNK)
                    if not data:
                        return
                    dropped += len(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return

    async def _refuse(self, status: int, message: str) -> None:
        """Answer a request h11 could not read, if an answer can still be sent."""
        if self._protocol.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            await self.respond(HttpResponse.text(status, message, [("connection", "close")]))
