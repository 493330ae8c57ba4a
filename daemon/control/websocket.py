"""The server side of one WebSocket connection: wsproto's public API over a trio stream.

The daemon owns this layer (ARCHITECTURE.md: where a library's public API is
too slow, own the layer rather than reach under it). trio-websocket has no
public way to write several messages at once nor to write without a task
switch, and the daemon needs both: they halve the view-ack latency under
load (perf/README.md, control_latency). Here every piece is public:
``wsproto.WSConnection`` parses and frames, ``trio.SocketStream`` carries the
bytes, and its ``socket.fileno()`` is what :meth:`ServerWebSocket.try_write`
writes to without a checkpoint.

What the class does, and what it leaves to its owner (``connection.Connection``):

- Reading: :meth:`ServerWebSocket.receive` reads at most ``READ_CHUNK`` bytes
  at a time and counts each message's bytes as its fragments arrive. A text
  message over ``max_text_bytes`` is reported at once (:class:`TextOverLimit`,
  so the owner can answer ``too_large`` while the connection stays usable)
  and the rest of it is skipped as it arrives, never buffered; a binary
  message over ``max_binary_bytes``, or a skipped text that goes past that
  same ceiling, or a fragment that would pass the budget every connection
  shares for messages still arriving (``partial_budget.py``), raises
  :class:`MessageRefused` with 1009; a peer that breaks
  the protocol (bad UTF-8, a bad frame) raises it with wsproto's code (1007,
  1002). Pings are answered with a pong; the peer's close is answered and
  raises :class:`ConnectionClosed`.
- Writing: every write of a whole frame holds one lock, so a pong or a close
  frame never lands inside a batch; :meth:`try_write` writes only while nobody
  holds it. A write that was cut (cancelled part-way, say by the owner's send
  timeout) leaves a frame half sent: no close frame can follow it (it would
  be read as that frame's payload), so :meth:`aclose` then only closes the
  stream and the client sees 1006.
- Closing: :meth:`aclose` runs the close handshake (our close frame, then the
  peer's, within a timeout), then closes the stream.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from dataclasses import dataclass
from typing import cast

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Ping, Pong, TextMessage

from compositord.daemon.control.partial_budget import PartialMessageBudget

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_ABNORMAL = 1006  # never sent: what a peer reports when the stream ends without a close frame
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011

# One read takes at most this much from the socket: what wsproto holds unparsed, and what one read
# can add to the queue of parsed messages, stays within it (plus a frame header).
READ_CHUNK = 64 * 1024


class ConnectionClosed(Exception):
    """The connection is closed (by the peer, or by this side); ``code`` and ``reason`` say how."""

    def __init__(self, code: int, reason: str | None = None) -> None:
        super().__init__(f"{code} {reason or ''}".strip())
        self.code = code
        self.reason = reason


class MessageRefused(Exception):
    """What the peer sent ends the connection: the owner closes it with ``code`` (1009 too big, 1002, 1007)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class TextOverLimit:
    """A text message passed ``limit`` bytes: refused, the rest of it is skipped as it arrives.

    ``head``: its first ``limit`` characters at most (what had arrived), where the refusal looks for
    the correlation id and stamps to name (``protocol/message_head.py``)."""

    limit: int
    head: str = ""


@dataclass(frozen=True)
class _PingReceived:
    payload: bytes


@dataclass(frozen=True)
class _CloseReceived:
    code: int
    reason: str | None
    by_peer: bool  # a close frame (REMOTE_CLOSING), not the end of the stream


_Received = str | bytes | TextOverLimit | _PingReceived | _CloseReceived | MessageRefused


def remote_of(stream: trio.SocketStream) -> str:
    """``host:port`` (``[host]:port`` for IPv6) of the peer, for logs."""
    try:
        address = stream.socket.getpeername()
    except OSError:
        return "?"
    if isinstance(address, tuple) and len(address) >= 2:
        host = str(address[0])
        return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
    return str(address)


def accept_upgrade(
    headers: list[tuple[bytes, bytes]],
    target: str,
    extra_headers: list[tuple[bytes, bytes]],
    *,
    subprotocol: str | None = None,
) -> tuple[WSConnection, bytes]:
    """Take over an upgrade request parsed elsewhere (h11): the wsproto connection and its 101 response.

    ``subprotocol``: the one to select, from those the request offered (None: select none).
    Raises ``wsproto.utilities.RemoteProtocolError`` (or h11's ``LocalProtocolError``, for a request
    h11 accepted as HTTP/1.0 but that cannot be replayed as an upgrade) when the request is not a valid
    WebSocket upgrade; the caller answers 400 with its message.
    """
    connection = WSConnection(ConnectionType.SERVER)
    connection.initiate_upgrade_connection(headers, target)
    for _ in connection.events():  # the Request event: checked already by the caller (path, token, origin)
        pass
    # No extension is accepted: every server frame is then the same bytes for every client (outgoing.py).
    return connection, connection.send(AcceptConnection(subprotocol=subprotocol, extra_headers=extra_headers))


class ServerWebSocket:
    def __init__(
        self,
        transport: trio.SocketStream,
        connection: WSConnection,
        *,
        max_text_bytes: int,
        max_binary_bytes: int,
        control_timeout: float,
        trailing_data: bytes = b"",
        partial_budget: PartialMessageBudget | None = None,
    ) -> None:
        """``connection`` is OPEN (after :func:`accept_upgrade`); ``trailing_data``: bytes the HTTP parser
        read past the request, the start of the WebSocket stream."""
        if connection.state is not ConnectionState.OPEN:
            raise ValueError(f"the wsproto connection must be OPEN, not {connection.state.name}")
        self._transport = transport
        self._protocol = connection
        self._fd = transport.socket.fileno()
        self._max_text_bytes = max_text_bytes
        self._max_binary_bytes = max_binary_bytes
        self._control_timeout = control_timeout
        self._write_lock = trio.Lock()
        self._received: deque[_Received] = deque()
        # The message being received: its parts, its size in bytes so far, and whether it is being skipped;
        # the bytes of its parts are charged to the budget shared by every connection while they are held.
        self._parts: list[str | bytes] = []
        self._size = 0
        self._skipping = False
        self._partial_budget = partial_budget
        self._held = 0
        self._refusal: MessageRefused | None = None  # queued once: nothing after it is parsed
        self._unparsable = False  # wsproto failed to parse the stream: it cannot read the peer's close either
        self._closed: ConnectionClosed | None = None
        self._frame_cut = False
        self._transport_closed = False
        self.remote = remote_of(transport)
        if trailing_data:
            self._take(trailing_data)

    @property
    def closed(self) -> ConnectionClosed | None:
        """How the connection closed (or started closing); None while open."""
        return self._closed

    # -- reading -----------------------------------------------------------------

    async def receive(self) -> str | bytes | TextOverLimit:
        """The next whole message, or :class:`TextOverLimit` for a text message refused part-way.

        Raises :class:`ConnectionClosed` once the peer closed (its close answered) or the stream ended,
        :class:`MessageRefused` when the peer must be closed (the owner closes with its code).
        """
        while True:
            if self._closed is not None:
                raise self._closed
            if not self._received:
                if self._refusal is not None:
                    raise self._refusal  # nothing after it is parsed: reading on would never end
                await self._read()
                continue
            item = self._received.popleft()
            if isinstance(item, (str, bytes, TextOverLimit)):
                return item
            if isinstance(item, MessageRefused):
                raise item
            if isinstance(item, _PingReceived):
                await self._answer_ping(item.payload)
                continue
            await self._closed_by_peer(item)

    async def _read(self) -> None:
        try:
            data = await self._transport.receive_some(READ_CHUNK)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        self._take(data)

    def _take(self, data: bytes) -> None:
        """Feed wsproto and queue what it parsed (b"": the stream ended)."""
        if self._refusal is not None or self._protocol.state is ConnectionState.CLOSED:
            return
        self._protocol.receive_data(data or None)
        for event in self._protocol.events():
            if isinstance(event, (TextMessage, BytesMessage)):
                self._take_fragment(event)
            elif isinstance(event, Ping):
                self._received.append(_PingReceived(bytes(event.payload)))
            elif isinstance(event, CloseConnection):
                state = self._protocol.state
                if state is ConnectionState.OPEN:
                    # wsproto could not parse the stream (bad UTF-8 1007, a bad frame 1002): close with its code.
                    self._unparsable = True
                    self._refuse(event.code, event.reason or "protocol error")
                else:  # REMOTE_CLOSING: the peer's close frame; CLOSED: the stream ended without one
                    self._received.append(_CloseReceived(event.code, event.reason, state is ConnectionState.REMOTE_CLOSING))
            # A Pong needs nothing: the daemon sends no pings.
            if self._refusal is not None or (self._received and isinstance(self._received[-1], _CloseReceived)):
                break

    def _take_fragment(self, event: TextMessage | BytesMessage) -> None:
        data: str | bytes = event.data if isinstance(event.data, str) else bytes(event.data)  # bytes(bytes): no copy
        # wsproto decodes text as it arrives; a str that is all ASCII (an O(1) check) has one byte a character.
        count = len(data) if not isinstance(data, str) or data.isascii() else len(data.encode("utf-8"))
        self._size += count
        ceiling = self._max_binary_bytes  # the largest message read at all, even to skip it
        if self._skipping:
            if self._size > ceiling:
                self._refuse(CLOSE_TOO_BIG, f"text message over {ceiling} bytes")
            elif event.message_finished:
                self._end_message()
            return
        limit = self._max_text_bytes if isinstance(data, str) else self._max_binary_bytes
        if self._size > limit:
            if not isinstance(data, str):
                self._refuse(CLOSE_TOO_BIG, f"binary message over {limit} bytes")
                return
            head = "".join(cast("list[str]", self._parts))
            self._received.append(TextOverLimit(limit, (head + data[: max(0, limit - len(head))])[:limit]))
            self._parts = []
            if event.message_finished:
                self._end_message()
            else:
                self._skipping = True
            return
        if not event.message_finished:
            if self._partial_budget is not None and not self._partial_budget.take(count):
                limit = self._partial_budget.limit
                self._refuse(CLOSE_TOO_BIG, f"messages still arriving on all connections would pass {limit} bytes")
                return
            self._parts.append(data)
            self._held += count
            return
        if self._parts:  # the last fragment of several: wsproto keeps a message's fragments of one type
            self._parts.append(data)
            data = (
                "".join(cast("list[str]", self._parts)) if isinstance(data, str) else b"".join(cast("list[bytes]", self._parts))
            )
        self._received.append(data)
        self._end_message()

    def _end_message(self) -> None:
        self._parts, self._size, self._skipping = [], 0, False
        self._give_back()

    def _give_back(self, *, closing: bool = False) -> None:
        """What this connection held of an unfinished message goes back to the shared budget (``closing``:
        and, its parts dropped, to the system)."""
        if self._held and self._partial_budget is not None:
            self._partial_budget.give_back(self._held, closing=closing)
        self._held = 0

    def _refuse(self, code: int, reason: str) -> None:
        self._parts = []
        self._give_back(closing=True)  # the connection closes on a refusal
        self._refusal = MessageRefused(code, reason)
        self._received.append(self._refusal)

    async def _answer_ping(self, payload: bytes) -> None:
        if self._protocol.state is ConnectionState.OPEN:
            await self._write_control(self._protocol.send(Pong(payload)))

    async def _closed_by_peer(self, event: _CloseReceived) -> None:
        if event.by_peer and self._protocol.state is ConnectionState.REMOTE_CLOSING:
            # Answered before it counts as closed: meanwhile the sender may still finish a batch, which
            # the peer drops (it is closing); marked closed first, the sender would end the connection
            # and could cut this answer.
            try:
                await self._write_control(self._protocol.send(CloseConnection(event.code, event.reason)))
            finally:
                self._closed = ConnectionClosed(event.code, event.reason)
        else:
            self._closed = ConnectionClosed(CLOSE_ABNORMAL, "the stream ended without a close frame")
        raise self._closed

    # -- writing -------------------------------------------------------------------

    def try_write(self, data: bytes) -> int | None:
        """Write what the socket takes of ``data`` now: one non-blocking system call, no checkpoint.

        Returns how many bytes it took (0: its buffer is full), or None when no write may start now:
        the connection is closing, or a write holds the stream (a batch waiting for room, a pong).
        The caller sends the rest, first, through :meth:`send_frames`. Why: a write through a trio
        task (wake the connection's sender, cancel scope, lock, ``send_all`` with its two
        checkpoints) cost about 26 us per message where the system call alone costs 2.5 us, and at
        100 clients the daemon makes one such write per client and frame (perf/README.md).
        """
        if self._closed is not None or self._frame_cut or self._write_lock.locked():
            return None
        try:
            return os.write(self._fd, data)
        except BlockingIOError:
            return 0
        except OSError:
            return None  # the peer is gone: the reader or the next send_frames finds out and ends the connection

    async def send_frames(self, data: bytes) -> None:
        """Write already framed messages in one go, after any write in progress.

        :class:`ConnectionClosed` when the connection is closed or the peer is gone. Cancelled part-way
        (a send timeout), the frame is cut: the connection can then only be aborted (:meth:`aclose`).
        """
        if self._closed is not None or self._frame_cut:
            raise self._closed or ConnectionClosed(CLOSE_ABNORMAL, "a frame was cut")
        async with self._write_lock:
            await self._send_all(data)

    async def _write_control(self, data: bytes) -> None:
        """A pong or close frame, within the control timeout (cut past it: the peer does not read)."""
        with trio.move_on_after(self._control_timeout):
            async with self._write_lock:
                # A peer gone is not this write's problem: the reader sees the end of the stream next.
                with contextlib.suppress(ConnectionClosed):
                    if not self._frame_cut:
                        await self._send_all(data)

    async def _send_all(self, data: bytes) -> None:
        """With the write lock held."""
        complete = False
        try:
            await self._transport.send_all(data)
            complete = True
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            complete = True  # nothing more can be sent at all
            if self._closed is None:
                self._closed = ConnectionClosed(CLOSE_ABNORMAL, "the peer is gone")
            raise self._closed from None
        finally:
            if not complete:
                self._frame_cut = True

    # -- closing -------------------------------------------------------------------

    async def aclose(self, code: int = CLOSE_NORMAL, reason: str | None = None, *, timeout: float) -> None:
        """Close: our close frame, the peer's answer (both within ``timeout``), then the stream.

        After a cut frame, or once the peer has gone, only the stream is closed (a plain FIN, not a
        reset: the peer reads what was sent, then the end of the stream: 1006). Idempotent.
        """
        if self._transport_closed:
            return
        try:
            # A peer that is gone (ConnectionClosed) needs no handshake: only the stream is left to close.
            with trio.move_on_after(timeout), contextlib.suppress(ConnectionClosed):
                await self._close_handshake(code, reason)
        finally:
            self._transport_closed = True
            self._parts = []  # a message that will never finish: its memory and its budget go back now
            self._give_back(closing=True)
            if self._closed is None:
                self._closed = ConnectionClosed(code, reason)
            await trio.aclose_forcefully(self._transport)

    async def _close_handshake(self, code: int, reason: str | None) -> None:
        state = self._protocol.state
        if self._frame_cut or state not in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            return
        if self._closed is None:
            self._closed = ConnectionClosed(code, reason)
        frame = self._protocol.send(CloseConnection(code, reason))
        async with self._write_lock:
            await self._send_all(frame)
        if state is ConnectionState.REMOTE_CLOSING or self._unparsable:
            # That was the answer to the peer's close; or the stream cannot be parsed, so the peer's close
            # could not be read (RFC 6455 7.1.7: failing the connection, the stream is closed at once).
            return
        # RFC 6455 7.1.1: the server closes the stream once the peer answered; what arrives before is dropped.
        while self._protocol.state is ConnectionState.LOCAL_CLOSING:
            try:
                data = await self._transport.receive_some(READ_CHUNK)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                return
            self._protocol.receive_data(data)
            if any(isinstance(event, CloseConnection) for event in self._protocol.events()):
                return
