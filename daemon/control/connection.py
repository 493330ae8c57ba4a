"""One client connection: one nursery with a reader and one sender.

The reader takes each message through the size and rate limits and hands it
to the dispatcher (the session logic), which answers through this
connection's mailbox. Responses and events leave in mailbox order: written at
once by :meth:`Connection.deliver` when nothing is queued (one system call,
no task switch), else by the sender task, everything queued in one write
(daemon/control/outgoing.py), each write within the send timeout; a client
that does not read in time is closed with 1008 (policy) and resyncs with
``getpipeline`` when it reconnects.

Closing has one seam: :meth:`Connection.close` records the close code and
cancels the nursery; ``run`` then closes the WebSocket with that code, within
a bounded time, whatever ended the connection.

A send that times out is the exception: part of a frame is on the wire by
then, so any close frame after it would reach the client as the rest of that
frame's payload. Such a connection is aborted instead (the TCP stream closed
without a close frame; ``websocket.ServerWebSocket.aclose`` knows): the
client sees an abnormal closure (1006), reconnects and resyncs.
``close_code`` still says 1008 for the logs.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Protocol

import trio

from compositord.daemon.control.mailbox import Mailbox, MailboxClosed, MailboxFull
from compositord.daemon.control.outgoing import Broadcast, Outgoing, frame_of, size_of
from compositord.daemon.control.rate_limit import TokenBucket
from compositord.daemon.control.websocket import (  # noqa: F401  (close codes: re-exported for the daemon's other modules)
    CLOSE_GOING_AWAY,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
    ConnectionClosed,
    MessageRefused,
    ServerWebSocket,
    TextOverLimit,
)
from compositord.protocol import pcm
from compositord.protocol.envelope import MAX_TEXT_BYTES
from compositord.protocol.errors import ErrorCode, RemoteProtocolError
from compositord.protocol.message_head import MessageHead, read_head

log = logging.getLogger(__name__)

_connection_ids = itertools.count(1)

# A sender writes what its mailbox holds in one system call, up to about this many bytes of text:
# enough for a frame's events to every node, small enough that one write does not hold the loop long.
_BATCH_BYTES = 256 * 1024

# A message refused unread (rate limited) is read this far for its correlation id and stamps: reading it
# costs, which a client over its rate must not be able to make expensive.
_HEAD_READ_WHEN_RATE_LIMITED = 4096


@dataclass(frozen=True)
class ConnectionLimits:
    max_text_bytes: int = MAX_TEXT_BYTES
    messages_per_second: float = 2000.0
    send_timeout: float = 5.0
    mailbox_capacity: int = 4096
    mailbox_bytes: int = 8 * 1024 * 1024  # what may wait for a client that reads too slowly, in bytes (mailbox.py)
    close_timeout: float = 2.0
    # Pushed audio (PROTOCOL.md section 6.1), bytes a second, saved up for at most a second; the default is
    # about five streams of 48 kHz stereo float.
    audio_bytes_per_second: float = 2 * 1024 * 1024


class Dispatcher(Protocol):
    def connection_opened(self, connection: Connection) -> None:
        """A client connected: from now on it gets every event. Must not block."""

    async def handle_text(self, connection: Connection, text: str) -> None:
        """Handle one request; every answer goes through ``connection.send``."""

    def handle_binary(self, connection: Connection, data: bytes) -> None:
        """Handle one binary message (pushed frames and audio, PROTOCOL.md section 6)."""

    def refuse(self, connection: Connection, error: RemoteProtocolError, head: MessageHead) -> None:
        """Answer a message that never reached the session logic (too large, rate limited); ``head`` is
        what could be read of it (its correlation id and stamps)."""

    def connection_closed(self, connection: Connection) -> None:
        """The connection is gone: forget its senders (rule S5). Must not block."""


class Connection:
    def __init__(
        self, websocket: ServerWebSocket, limits: ConnectionLimits, *, remote: str = "", dialect: str | None = None
    ) -> None:
        self.connection_id = next(_connection_ids)
        self.remote = remote
        # The dialect the client asked for at the handshake (protocol.streamkit.DIALECTS), None for compositord's own.
        self.dialect = dialect
        self.mailbox = Mailbox(limits.mailbox_capacity, limits.mailbox_bytes)
        # Every `_sender` nonce seen on this connection; forgotten when it closes (S5).
        self.senders: set[str] = set()
        self._websocket = websocket
        self._limits = limits
        self._bucket = TokenBucket(limits.messages_per_second)
        # Bytes of pushed audio this connection may still send (sessions/pushed_audio.py takes from it). The
        # burst holds at least the largest message, which would otherwise never pass.
        self.audio_budget = TokenBucket(
            limits.audio_bytes_per_second, max(limits.audio_bytes_per_second, float(pcm.MAX_MESSAGE_BYTES))
        )
        self._nursery_scope: trio.CancelScope | None = None
        self._reader_scope: trio.CancelScope | None = None
        self._sending = False
        self._close_code = CLOSE_NORMAL
        self._close_reason = ""
        self._closing = False
        self.messages_sent = 0
        self.writes = 0  # socket writes: each carries one or more messages (statistics)
        self.closed = trio.Event()

    @property
    def close_code(self) -> int | None:
        """The code this side closes (or closed) with; None while open."""
        return self._close_code if self._closing else None

    @property
    def close_reason(self) -> str:
        return self._close_reason

    def __repr__(self) -> str:
        return f"<Connection {self.connection_id} {self.remote}>"

    # -- used by the dispatcher and the hub (never block) --------------------

    def send(self, text: str) -> None:
        """Send a message in order (a response): at once when nothing is waiting, else queued."""
        try:
            self.deliver([(None, text)])
        except MailboxFull as exc:
            self.close_for_policy(f"too slow: {exc}")

    def deliver(self, messages: Sequence[tuple[Hashable | None, Outgoing]]) -> None:
        """``(coalesce key or None, message)`` pairs (the hub's fan-out), in order.

        When nothing is queued or being written they are written at once, in one system call
        (``ServerWebSocket.try_write``), and the sender task is not woken; what the socket does not take
        waits in the mailbox, its cut frame first. Otherwise they are queued behind the rest.
        Raises :class:`MailboxFull` when the mailbox overflows.
        """
        if self._closing:
            return
        messages = [(key, m) for key, m in self._in_dialect(messages) if m is not None]
        if not messages:
            return
        if not self._sending and not len(self.mailbox):
            data = b"".join(frame_of(message) for _, message in messages)
            written = self._websocket.try_write(data)
            if written:  # None: cannot write now; 0: the socket is full (queued as messages: still coalescable)
                self.writes += 1
                self.messages_sent += len(messages)
                if written < len(data):
                    self.mailbox.put_first(data[written:])  # the rest, starting inside a frame maybe
                return
        self.mailbox.put_all(messages)

    def _in_dialect(self, messages: Sequence[tuple[Hashable | None, Outgoing]]) -> list[tuple[Hashable | None, Outgoing | None]]:
        """Each event in this connection's dialect (None: not for it); responses as they are."""
        return [(key, m.for_dialect(self.dialect) if isinstance(m, Broadcast) else m) for key, m in messages]

    def close_for_policy(self, reason: str) -> None:
        self.close(CLOSE_POLICY, reason)

    def close(self, code: int, reason: str) -> None:
        """Close with ``code`` soon; the first reason given wins. Never blocks.

        The reader stops at once. A message being sent is finished first
        (within the send timeout): cutting a frame in half would make the
        close frame after it unreadable.
        """
        if self._closing:
            return
        self._closing = True
        self._close_code = code
        self._close_reason = reason[:120]  # a close reason must fit a control frame
        self.mailbox.close()
        if self._reader_scope is not None:
            self._reader_scope.cancel()
        if not self._sending and self._nursery_scope is not None:
            self._nursery_scope.cancel()

    # -- the connection's own tasks -------------------------------------------

    async def run(self, dispatcher: Dispatcher) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery_scope = nursery.cancel_scope
                nursery.start_soon(self._send_loop)
                with trio.CancelScope() as reader_scope:
                    self._reader_scope = reader_scope
                    if self._closing:
                        reader_scope.cancel()
                    await self._read_loop(dispatcher)
                if not self._closing:
                    # The peer closed: nothing more can be sent.
                    nursery.cancel_scope.cancel()
        finally:
            self.mailbox.close()
            try:
                dispatcher.connection_closed(self)
            finally:
                with trio.CancelScope(shield=True):
                    # After a cut frame this only closes the stream (the client sees 1006).
                    await self._websocket.aclose(self._close_code, self._close_reason or None, timeout=self._limits.close_timeout)
                self.closed.set()

    async def _read_loop(self, dispatcher: Dispatcher) -> None:
        while True:
            try:
                message = await self._websocket.receive()
            except ConnectionClosed:
                return
            except MessageRefused as refused:  # too big for any reply (1009), or not WebSocket at all (1002, 1007)
                self.close(refused.code, refused.reason)
                return
            if not self._bucket.try_take():
                dispatcher.refuse(
                    self,
                    RemoteProtocolError(
                        ErrorCode.RATE_LIMITED,
                        f"more than {self._limits.messages_per_second:g} messages per second; message not processed",
                    ),
                    _head_of(message, _HEAD_READ_WHEN_RATE_LIMITED),
                )
                continue
            if isinstance(message, TextOverLimit):
                dispatcher.refuse(
                    self,
                    RemoteProtocolError(ErrorCode.TOO_LARGE, f"text message over {message.limit} bytes; message not processed"),
                    read_head(message.head, max_chars=message.limit),
                )
            elif isinstance(message, str):
                await dispatcher.handle_text(self, message)
            else:
                dispatcher.handle_binary(self, message)

    async def _send_loop(self) -> None:
        while not self._closing:
            try:
                batch = [await self.mailbox.get()]
            except MailboxClosed:
                return
            if self._closing:
                return
            batch_bytes = size_of(batch[0])
            while batch_bytes < _BATCH_BYTES:
                try:
                    batch.append(self.mailbox.get_nowait())
                except (trio.WouldBlock, MailboxClosed):
                    break
                batch_bytes += size_of(batch[-1])
            data = b"".join(frame_of(message) for message in batch)
            self._sending = True
            try:
                with trio.move_on_after(self._limits.send_timeout) as scope:
                    await self._websocket.send_frames(data)
            except ConnectionClosed:
                if self._nursery_scope is not None:
                    self._nursery_scope.cancel()  # the peer is gone
                return
            finally:
                self._sending = False
            self.messages_sent += len(batch)
            self.writes += 1
            if scope.cancelled_caught:  # the frame was cut: the websocket will close without a close frame
                self.close_for_policy(f"send timed out after {self._limits.send_timeout:g} s")
                return


def _head_of(message: str | bytes | TextOverLimit, max_chars: int) -> MessageHead:
    if isinstance(message, TextOverLimit):
        return read_head(message.head, max_chars=max_chars)
    return read_head(message, max_chars=max_chars) if isinstance(message, str) else MessageHead()
