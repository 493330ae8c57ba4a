"""What crosses between the control process and an engine process, and how it is framed on their socket.

The two processes share a private ``socket.socketpair`` (the engine inherits
its end; nothing else can connect to it). Each message is one frame: a 4-byte
big-endian length, then the pickle of one message. A message is one of the
``api`` commands and events (frozen dataclasses of plain data) or one of the
few messages below that only the socket needs (the engine's configuration,
shared-memory slots, references to frames in them, progress).

Why pickle: both ends run this package's own code, and every message is a
frozen dataclass of plain data, so pickle carries it as it is at no cost to
write or keep in step. Unpickling is restricted to the message classes and the
records they hold (:class:`MessageUnpickler`): an engine decodes media that
clients chose, and an engine that a crafted file took over must not be able
to run code in the control process through the socket.

Pixels never travel through the socket: a pushed frame (control -> engine) or a
preview's JPEG (engine -> control) is written into a shared-memory slot
(``engine.frame_slots``) and only a reference to it is framed here. A slot's
file descriptor goes over the socket once, as ``SCM_RIGHTS`` ancillary data
beside the :class:`SlotOpened` message that names it.

Pushed audio is the exception: an ``api.PushedAudio`` is framed whole, PCM
included. A slot holds the latest of something and lets the reader skip what
it missed, which suits pictures; sound is a stream in which every message
counts, in order, and it is small (200 ms of the largest format the header
allows is 150 KB, a second of 48 kHz stereo float 384 KB, against tens of MB
for a second of video), so the ordered socket carries it and a ring of
shared memory with its own flow control would buy nothing. The control side
bounds what waits for the socket (``engine_client``: messages and bytes of
audio in flight per engine), so a flood is dropped there, counted, and never
fills the command queue.

This module is plain data and the standard library: the control process
imports it (through the layering rule's allowed list) without GL or media.
"""

from __future__ import annotations

import array
import io
import pickle
import socket
import struct
import typing
from collections import deque
from dataclasses import dataclass
from typing import Any

from compositord.daemon.engine import api
from compositord.daemon.state.model import ConnectionRecord, NodeRecord, SessionRecord
from compositord.protocol.causal import Stamp
from compositord.protocol.scenes import AnimateSpec

LENGTH = struct.Struct(">I")
# Messages hold params, layouts, stats and pushed audio (at most 150 KB each), never pixels; a frame longer
# than this is a broken peer.
MAX_MESSAGE_BYTES = 16 * 2**20
# At most this many descriptors arrive with one read (one per SlotOpened in it).
MAX_FDS_PER_READ = 16
PICKLE_PROTOCOL = 5


# --------------------------------------------------------------------------- control -> engine


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """The first message to a new engine process: the session to render and where things are."""

    session: SessionRecord
    asset_dir: str
    output_dir: str | None
    device_index: int | None = None
    # Hosts a ``sink::stream`` ``listen`` URL may bind: loopback unless the operator allowed more.
    listen_hosts: tuple[str, ...] = api.LOOPBACK_HOSTS
    # File outputs stop before free space falls under it (the operator's min_free_disk_bytes); None: the sinks' default.
    min_free_disk_bytes: int | None = None
    # "module:function" called in the engine with ``listener_argument``; it returns an output listener
    # (``RenderLoop.add_output_listener``). Set by the benchmarks' probes only, never from a client.
    output_listener: str | None = None
    listener_argument: str = ""


@dataclass(frozen=True, slots=True)
class PushedFrameRef:
    """A pushed frame (``api.PushedFrame`` without its bytes), which waits in buffer ``buffer`` of slot ``slot_id``."""

    node_id: str
    width: int
    height: int
    pixel_format: str
    pts_us: int
    slot_id: int
    buffer: int
    seq: int
    length: int


@dataclass(frozen=True, slots=True)
class CommandComing:
    """The control process has begun to prepare a command (a tune): a frame that starts before the matching
    :class:`CommandSettled` arrives waits a little for it (``engine/process.py`` says why and how long)."""


@dataclass(frozen=True, slots=True)
class CommandSettled:
    """The tune a :class:`CommandComing` announced was refused (one that was not settles it with its ``ParamsUpdate``)."""


# --------------------------------------------------------------------------- engine -> control


@dataclass(frozen=True, slots=True)
class Progress:
    """Sent instead of ``api.FrameEnded``: a frame ended, and the engine's counters after it."""

    statistics: api.EngineStatistics


@dataclass(frozen=True, slots=True)
class PreviewRef:
    """An ``api.PreviewUpdated`` whose JPEG waits in buffer ``buffer`` of slot ``slot_id``."""

    node_id: str
    slot_id: int
    buffer: int
    seq: int
    length: int
    width: int
    height: int
    frame_number: int
    media_time: float
    timestamp: float


# --------------------------------------------------------------------------- both ways


@dataclass(frozen=True, slots=True)
class SlotOpened:
    """A shared-memory slot of ``size`` bytes, whose descriptor came with this message (``SCM_RIGHTS``).
    ``slot_id`` is unique per sender; a newer slot for the same purpose replaces the older one."""

    slot_id: int
    size: int


@dataclass(frozen=True, slots=True)
class SlotClosed:
    """The sender will not write the slot again: the receiver unmaps it."""

    slot_id: int


Message = (
    api.Command
    | api.Event
    | api.PushedAudio
    | EngineConfig
    | PushedFrameRef
    | CommandComing
    | CommandSettled
    | Progress
    | PreviewRef
    | SlotOpened
    | SlotClosed
)

_ALLOWED_CLASSES: dict[tuple[str, str], type] = {
    (cls.__module__, cls.__qualname__): cls
    for cls in (
        *typing.get_args(api.Command),
        *typing.get_args(api.Event),
        api.EngineStatistics,
        api.PreviewImage,
        api.PushedAudio,
        EngineConfig,
        PushedFrameRef,
        CommandComing,
        CommandSettled,
        Progress,
        PreviewRef,
        SlotOpened,
        SlotClosed,
        SessionRecord,
        NodeRecord,
        ConnectionRecord,
        Stamp,
        AnimateSpec,
    )
}


class WireError(Exception):
    """The peer sent something that is not a message of this module: the connection cannot go on."""


class MessageUnpickler(pickle.Unpickler):
    """Builds only the message classes and the records they hold (the pickle documentation's
    "restricting globals"); anything else, a function or any other class, is a :class:`WireError`."""

    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED_CLASSES.get((module, name))
        if found is None:
            raise WireError(f"a message names {module}.{name}, which is not a message class")
        return found


def encode(message: Message) -> bytes:
    """One frame: the length, then the pickled message."""
    body = pickle.dumps(message, protocol=PICKLE_PROTOCOL)
    if len(body) > MAX_MESSAGE_BYTES:
        raise WireError(f"a {type(message).__name__} message of {len(body)} bytes is over {MAX_MESSAGE_BYTES}")
    return LENGTH.pack(len(body)) + body


def decode(body: bytes | memoryview) -> Message:
    try:
        message = MessageUnpickler(io.BytesIO(body)).load()
    except WireError:
        raise
    except Exception as exc:
        raise WireError(f"not a message: {type(exc).__name__}: {exc}") from exc
    if type(message) not in _ALLOWED_CLASSES.values():
        raise WireError(f"not a message: a {type(message).__name__}")
    return message  # type: ignore[no-any-return,unused-ignore]


def received_fds(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    """The descriptors in ``recvmsg``'s ancillary data (``SCM_RIGHTS``), in order."""
    fds: list[int] = []
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            received = array.array("i")
            received.frombytes(payload[: len(payload) - len(payload) % received.itemsize])
            fds.extend(received)
    return fds


class FrameReader:
    """Sans-IO: feed it what the socket gave (bytes and descriptors), take whole messages out.

    Descriptors arrive with the bytes of the message they belong to, in order; each
    :class:`SlotOpened` takes the oldest one not taken yet (:meth:`take_fd`).
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._fds: deque[int] = deque()

    def feed(self, data: bytes, fds: list[int] | tuple[int, ...] = ()) -> list[Message]:
        self._buffer += data
        self._fds.extend(fds)
        messages: list[Message] = []
        while len(self._buffer) >= LENGTH.size:
            (length,) = LENGTH.unpack_from(self._buffer)
            if length > MAX_MESSAGE_BYTES:
                raise WireError(f"a frame announces {length} bytes, over {MAX_MESSAGE_BYTES}")
            end = LENGTH.size + length
            if len(self._buffer) < end:
                break
            messages.append(decode(bytes(self._buffer[LENGTH.size : end])))
            del self._buffer[:end]
        return messages

    def take_fd(self) -> int:
        if not self._fds:
            raise WireError("a SlotOpened message came without its descriptor")
        return self._fds.popleft()

    def close(self) -> list[int]:
        """The descriptors no message took (the caller closes them)."""
        left = list(self._fds)
        self._fds.clear()
        return left
