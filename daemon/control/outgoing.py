"""Outgoing messages as WebSocket frames, written to a connection in batches.

A connection's sender writes everything queued in its mailbox with one
``send_all`` (one system call, one trio checkpoint) instead of one write per
message: at 100 clients and 60 fps the daemon sends about 12,000 events a
second, and the per-message cost of a write (a wsproto event, the stream lock,
a socket send) was the largest part of the daemon's CPU under that load
(perf/README.md). ``websocket.ServerWebSocket`` does the writing.

An event fanned out by the hub is framed once for every connection: frames
from a server are never masked (RFC 6455 section 5.1) and the daemon
negotiates no extension (``websocket.accept_upgrade`` accepts none), so the
bytes on the wire are the same for every client. :class:`Broadcast` keeps
them. Responses are plain ``str``, framed when they are sent.

Framing goes through wsproto's public API: ``WSConnection.send(TextMessage(...))``
returns a frame's bytes, but only in the OPEN state, which a connection
reaches through a handshake. So each thread that frames has one server-side
``WSConnection`` of its own, taken once through a handshake with a made-up
request (:func:`_open_framer`) and kept OPEN: every message it frames is
whole (``message_finished``), so nothing it frames depends on the one
before, and it never receives a byte, so it never leaves OPEN. Per thread,
not per process: wsproto's objects are not thread-safe, and tests run several
daemons, each on its own trio thread, in one process.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Mapping

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, TextMessage

_framers = threading.local()


def _open_framer() -> WSConnection:
    framer = WSConnection(ConnectionType.SERVER)
    key = base64.b64encode(b"compositord-only").decode()  # any 16 bytes: nobody checks the answer
    framer.initiate_upgrade_connection(
        [
            (b"host", b"localhost"),
            (b"connection", b"Upgrade"),
            (b"upgrade", b"websocket"),
            (b"sec-websocket-version", b"13"),
            (b"sec-websocket-key", key.encode()),
        ],
        "/",
    )
    for _ in framer.events():  # the made-up request
        pass
    framer.send(AcceptConnection())
    return framer


def frame_text(text: str) -> bytes:
    """``text`` as one unmasked, unfragmented WebSocket text frame."""
    framer: WSConnection | None = getattr(_framers, "framer", None)
    if framer is None:
        framer = _framers.framer = _open_framer()
    return framer.send(TextMessage(data=text))


class Broadcast:
    """One event for every connection, encoded and framed once, when the first connection sends it.

    ``Broadcast(text)`` holds encoded text; ``Broadcast.deferred(encode)`` encodes only if it is sent:
    the hub holds a node's events for the frame, and a newer one usually replaces a held one, so at
    600 tunes a second only 60 of the ``nodeparamschanged`` made are ever encoded.

    ``variants`` (``{dialect: encode}``): the same event in the shapes of a dialect a connection asked
    for (docs/PROTOCOL.md, "StreamKit clients"); :meth:`for_dialect` gives it, made once for every
    connection of that dialect, and the event itself for a dialect it has no variant for. ``only_for``:
    an event that only connections of these dialects get (None: every connection).
    """

    __slots__ = ("_encode", "_frame", "_made", "_only_for", "_text", "_variants")

    def __init__(
        self,
        text: str,
        variants: Mapping[str, Callable[[], str]] | None = None,
        only_for: frozenset[str] | None = None,
    ) -> None:
        self._text: str | None = text
        self._encode: Callable[[], str] | None = None
        self._frame: bytes | None = None
        self._variants = variants
        self._only_for = only_for
        self._made: dict[str, Broadcast] | None = None

    @classmethod
    def deferred(
        cls,
        encode: Callable[[], str],
        variants: Mapping[str, Callable[[], str]] | None = None,
        only_for: frozenset[str] | None = None,
    ) -> Broadcast:
        message = cls("", variants, only_for)
        message._text, message._encode = None, encode
        return message

    def for_dialect(self, dialect: str | None) -> Broadcast | None:
        """What a connection of ``dialect`` (None: compositord's own) sends; None: nothing."""
        if self._only_for is not None and dialect not in self._only_for:
            return None
        if dialect is None or not self._variants or dialect not in self._variants:
            return self
        if self._made is None:
            self._made = {}
        made = self._made.get(dialect)
        if made is None:
            made = self._made[dialect] = Broadcast.deferred(self._variants[dialect])
        return made

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
