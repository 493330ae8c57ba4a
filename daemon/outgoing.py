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

:func:`send_frames` is the one place that reaches under trio-websocket's
public API (it has no way to write several messages at once): it takes the
connection's stream lock, as ``send_message`` does, so a pong or close frame
from trio-websocket's reader task never lands inside a batch.
``tests/test_outgoing.py`` checks the attributes it relies on, so an upgrade
of trio-websocket that moves them fails there, by name.
"""

from __future__ import annotations

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection
from wsproto.frame_protocol import FrameProtocol

# Stateless for whole messages (fin=True): one instance frames every message of this thread.
_SERVER_FRAMES = FrameProtocol(client=False, extensions=[])


def frame_text(text: str) -> bytes:
    """``text`` as one unmasked, unfragmented WebSocket text frame."""
    return bytes(_SERVER_FRAMES.send_data(text, fin=True))


class Broadcast:
    """One encoded event for every connection, framed once (lazily: the first sender frames it)."""

    __slots__ = ("text", "_frame")

    def __init__(self, text: str) -> None:
        self.text = text
        self._frame: bytes | None = None

    def frame(self) -> bytes:
        if self._frame is None:
            self._frame = frame_text(self.text)
        return self._frame

    def __repr__(self) -> str:
        return f"Broadcast({self.text[:60]!r})"


Outgoing = str | Broadcast  # what a mailbox holds: a response (framed when sent) or a fanned-out event


def frame_of(message: Outgoing) -> bytes:
    return message.frame() if isinstance(message, Broadcast) else frame_text(message)


def text_of(message: Outgoing) -> str:
    return message.text if isinstance(message, Broadcast) else message


async def send_frames(websocket: WebSocketConnection, data: bytes) -> None:
    """Write already framed messages to ``websocket`` in one go; :class:`ConnectionClosed` if it is closed."""
    if websocket.closed is not None:
        raise ConnectionClosed(websocket.closed)
    async with websocket._stream_lock:  # noqa: SLF001 - see the module docstring
        try:
            await websocket._stream.send_all(data)  # noqa: SLF001
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise ConnectionClosed(websocket.closed) from None
