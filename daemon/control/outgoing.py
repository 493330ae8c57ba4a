"""Outgoing messages as WebSocket frames, written to a connection in batches.

A connection's sender writes everything queued in its mailbox with one
``send_all`` (one system call, one trio checkpoint) instead of one
``send_message`` per message: at 100 clients and 60 fps the daemon sends
about 12,000 events a second, and the per-message cost of trio-websocket's
``send_message`` (a wsproto event, the stream lock, a socket send) was the
largest part of the daemon's CPU under that load (perf/README.md).

An event fanned out by the hub is framed once for every connection: frames
from a server are never masked (RFC 6455 section 5.1) and the daemon
negotiates no extension (trio-websocket's ``accept`` offers none), so the
bytes on the wire are the same for every client. :class:`Broadcast` keeps
them. Responses are plain ``str`` and framed by the connection that sends
them.

:func:`send_frames` and :func:`write_now` are the one place that reaches
under trio-websocket's public API (it has no way to write several messages
at once, nor to write without a task): ``send_frames`` takes the
connection's stream lock, as ``send_message`` does, so a pong or close frame
from trio-websocket's reader task never lands inside a batch, and
``write_now`` writes only while nobody holds that lock, in one system call
that no other task can interleave with.
``tests/test_outgoing.py`` checks the attributes it relies on, so an upgrade
of trio-websocket that moves them fails there, by name.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection
from wsproto.frame_protocol import FrameProtocol

# Stateless for whole messages (fin=True): one instance frames every message of this thread.
_SERVER_FRAMES = FrameProtocol(client=False, extensions=[])


def frame_text(text: str) -> bytes:
    """``text`` as one unmasked, unfragmented WebSocket text frame."""
    return bytes(_SERVER_FRAMES.send_data(text, fin=True))


class Broadcast:
    """One event for every connection, encoded and framed once, when the first connection sends it.

    ``Broadcast(text)`` holds encoded text; ``Broadcast.deferred(encode)`` encodes only if it is sent:
    the hub holds a node's events for the frame, and a newer one usually replaces a held one, so at
    600 tunes a second only 60 of the ``nodeparamschanged`` made are ever encoded.
    """

    __slots__ = ("_encode", "_frame", "_text")

    def __init__(self, text: str) -> None:
        self._text: str | None = text
        self._encode: Callable[[], str] | None = None
        self._frame: bytes | None = None

    @classmethod
    def deferred(cls, encode: Callable[[], str]) -> Broadcast:
        message = cls("")
        message._text, message._encode = None, encode
        return message

    @property
    def text(self) -> str:
        if self._text is None:
            assert self._encode is not None
            self._text, self._encode = self._encode(), None
        return self._text

    def frame(self) -> bytes:
        if self._frame is None:
            self._frame = frame_text(self.text)
        return self._frame

    def __repr__(self) -> str:
        return f"Broadcast({self.text[:60]!r})"


# What a mailbox holds: a response (framed when sent), a fanned-out event, or bytes already on their way:
# the rest of a write that the socket took only in part, which must go before anything else.
Outgoing = str | Broadcast | bytes


def frame_of(message: Outgoing) -> bytes:
    if isinstance(message, Broadcast):
        return message.frame()
    return message if isinstance(message, bytes) else frame_text(message)


def text_of(message: Outgoing) -> str:
    """The message's text (tests and statistics); the rest of a cut write has none of its own."""
    if isinstance(message, Broadcast):
        return message.text
    return message.decode("utf-8", "replace") if isinstance(message, bytes) else message


def size_of(message: Outgoing) -> int:
    return len(message.text) if isinstance(message, Broadcast) else len(message)


def write_now(websocket: WebSocketConnection, data: bytes) -> int | None:
    """Write what the socket takes of ``data`` at once, without waiting and without a trio checkpoint.

    Returns how many bytes it took (0 when its buffer is full), or None when no write may start now:
    the connection is closing, or another write holds the stream (a ``send_frames`` waiting for room,
    or trio-websocket answering a ping). The caller queues whatever was not written, and its rest
    first. Why: a write through a trio task (wake the connection's sender, cancel scope, stream lock,
    ``send_all`` with its two checkpoints) cost about 26 us per message where the system call alone
    costs 2.5 us, and at 100 clients the daemon makes one such write per client and frame.
    """
    if websocket.closed is not None or websocket._stream_lock.locked():
        return None
    try:
        return os.write(websocket._stream.socket.fileno(), data)
    except BlockingIOError:
        return 0
    except OSError:
        return None  # the peer is gone: the sender's next send_all finds out and ends the connection


async def send_frames(websocket: WebSocketConnection, data: bytes) -> None:
    """Write already framed messages to ``websocket`` in one go; :class:`ConnectionClosed` if it is closed."""
    if websocket.closed is not None:
        raise ConnectionClosed(websocket.closed)
    async with websocket._stream_lock:
        try:
            await websocket._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise ConnectionClosed(websocket.closed) from None
