"""The seam between the control side and a session's engine: commands in, events out, all plain data.

The control side (``sessions/``, ``app``) knows an engine only through this
module: the :class:`Engine` protocol it calls, the commands it submits, the
:class:`EngineEvents` sink the engine reports to, and :data:`EngineFactory`,
which makes an engine for a session. Today the engine is a render thread in
the daemon's process (``engine.loop.RenderLoop``); the types here are made so
that the same conversation can run over a local socket to an engine process:

- every command and event is a frozen dataclass of plain data (str, int,
  float, bool, None, bytes, and dicts, lists and tuples of those; the
  ``state.model`` records and ``protocol.causal.Stamp`` are plain dataclasses
  of the same), so pickle or JSON carries it as it is;
- the engine reports through one method, :meth:`EngineEvents.on_event`, called
  on the control side's trio thread in the order the events were emitted;
- queries (:meth:`Engine.statistics`, :meth:`Engine.preview`,
  :meth:`Engine.last_progress`) answer from what the engine last reported, so a
  proxy can answer them from the events it relayed, without a round trip;
- a pushed frame is a header plus its bytes (:class:`PushedFrame`); over a
  socket the bytes travel through shared memory and the header alone
  through the socket. Pushed audio (:class:`PushedAudio`) travels whole
  through the socket, in order with the commands.

This module imports nothing from the rest of ``engine/`` and nothing that
draws or decodes, so the control side may import it freely.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from compositord.daemon.state.model import SessionRecord
from compositord.protocol.causal import Stamp
from compositord.protocol.scenes import AnimateSpec

# Hosts a ``sink::stream`` with a ``listen`` URL may bind unless the operator allows more (a client must
# not be able to open a listener on every interface past the daemon's token).
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")

# --------------------------------------------------------------------------- commands (control -> engine)


@dataclass(frozen=True, slots=True)
class ParamsUpdate:
    """New durable params of a node (defaults not filled in), with the stamp of the tune that made them.

    ``animate`` (an animated edit, a compositor's only): the numbers this update changes move there over
    its duration instead of jumping (``protocol.scenes``); None: they jump, ending any animation of them.
    ``transition`` (a compositor's only, a checked patch of its params' ``transition``): how the change of
    ``program_scene`` that the frame latching this update makes is shown, that once; None: as the params say.
    """

    node_id: str
    params: dict[str, Any]
    stamp: Stamp | None  # None: the change has no sender (a structure change, the server itself)
    animate: AnimateSpec | None = None
    transition: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class BatchUpdate:
    """Updates that land in one frame; with ``topology`` (an atomic ``applybatch`` that also added,
    removed or connected nodes) the structure change lands in that same frame."""

    updates: tuple[ParamsUpdate, ...]
    topology: SessionRecord | None = None


@dataclass(frozen=True, slots=True)
class TopologyUpdate:
    """Nodes or connections changed: the session as stored now (the engine adopts it at its next frame)."""

    session: SessionRecord


@dataclass(frozen=True, slots=True)
class ForgetSender:
    """Rule S5: the sender's connection closed; its entry leaves the view-channel acks."""

    sender: str


@dataclass(frozen=True, slots=True)
class StartCompositorPreview:
    """Make JPEG thumbnails of a compositor's output, at most ``max_width`` wide and ``max_fps`` a second,
    reported as :class:`CompositorPreviewUpdated` until :class:`StopCompositorPreview` (or the node goes).
    Ephemeral: no node in the pipeline, nothing stored."""

    preview_id: str
    node_id: str
    max_width: int
    max_fps: float
    quality: int = 70


@dataclass(frozen=True, slots=True)
class StopCompositorPreview:
    preview_id: str


@dataclass(frozen=True, slots=True)
class Stop:
    """Finish: release everything, finish the sinks' files. :meth:`Engine.stop` submits it and waits."""


# What Engine.submit takes. Every one is non-blocking and latched by the engine at its next frame start.
Command = ParamsUpdate | BatchUpdate | TopologyUpdate | ForgetSender | StartCompositorPreview | StopCompositorPreview | Stop


@dataclass(frozen=True, slots=True)
class PushedFrame:
    """A checked pushed frame (PROTOCOL.md section 6) for one ``video::push`` node: the header's fields
    and the pixel bytes (``data``: exactly the byte count the shape needs, planes tightly packed).

    ``data`` may be a memoryview of the received message, so a frame reaches the engine without a copy;
    the engine must not keep it beyond making its own frame of it.
    """

    node_id: str
    width: int
    height: int
    pixel_format: str  # "rgba8", "nv12" or "i420"
    pts_us: int
    data: bytes | memoryview


@dataclass(frozen=True, slots=True)
class PushedAudio:
    """Checked pushed PCM (PROTOCOL.md section 6.1) for one ``audio::push`` node: the header's fields and the
    interleaved samples (``data``: exactly ``sample_count * channels`` samples of ``sample_format``).

    Unlike a frame it crosses to an engine process inline, with the command socket's ordering: every
    message counts (sound is a stream, not "the latest picture"), and a second of the largest format is
    under 1 MB. ``data`` may be a memoryview of the received message; the engine copies it before it
    returns from :meth:`Engine.push_audio`.
    """

    node_id: str
    sample_format: str  # "s16le", "f32le" or "s32le"
    channels: int  # 1 or 2
    sample_rate: int
    pts_us: int
    data: bytes | memoryview


# --------------------------------------------------------------------------- events (engine -> control)


@dataclass(frozen=True, slots=True)
class ViewData:
    """A compositor's resolved layout (rule S4): emitted when it changed or when the frame applied a
    stamped update of the node."""

    session_id: str
    node_id: str
    layout: dict[str, Any]  # PROTOCOL.md section 4, without "_" keys
    stamp: Stamp | None  # the last stamped update of this node applied in the frame; None: server-caused
    acks: dict[str, int]  # the node's view-channel acks as of the frame
    seq: int  # the node's view-data sequence number (+1 per emission)
    timestamp: float  # wall-clock time (time.time()) at the end of the frame


@dataclass(frozen=True, slots=True)
class NodeStats:
    """A node's statistics (at most once a second): the compositor's frame counts and render times,
    a source's or a sink's own counters."""

    session_id: str
    node_id: str
    stats: dict[str, Any]


@dataclass(frozen=True, slots=True)
class NodeState:
    """A node entered its error state (``error``: why) or left it (``error`` None); a live input also says
    whether it is ``connecting`` or ``live`` (``condition``; None for other nodes)."""

    session_id: str
    node_id: str
    error: str | None
    condition: str | None = None


@dataclass(frozen=True, slots=True)
class PreviewImage:
    """A JPEG thumbnail of what feeds a ``sink::preview`` node."""

    jpeg: bytes
    width: int
    height: int
    frame_number: int  # the compositor's frame counter
    media_time: float  # the frame's slot on the engine's clock, seconds
    timestamp: float  # wall clock (time.time()) when it was encoded


@dataclass(frozen=True, slots=True)
class PreviewUpdated:
    """A ``sink::preview`` node encoded a new thumbnail."""

    session_id: str
    node_id: str
    image: PreviewImage


@dataclass(frozen=True, slots=True)
class CompositorPreviewUpdated:
    """A thumbnail of a compositor preview (:class:`StartCompositorPreview`); ``rendered_at`` is the wall
    clock (time.time()) when its frame finished rendering."""

    session_id: str
    preview_id: str
    node_id: str
    image: PreviewImage
    rendered_at: float


@dataclass(frozen=True, slots=True)
class FrameEnded:
    """The engine finished a frame; emitted after that frame's view data."""

    session_id: str


@dataclass(frozen=True, slots=True)
class Started:
    """Every compositor of the session has rendered its first frame."""

    session_id: str


@dataclass(frozen=True, slots=True)
class Failed:
    """The engine stopped for good: it could not start (no GL context) or its render thread died.
    Also emitted when it was stopped before its first frame, so that nobody waits for that frame."""

    session_id: str
    message: str


Event = ViewData | NodeStats | NodeState | PreviewUpdated | CompositorPreviewUpdated | FrameEnded | Started | Failed


@dataclass(frozen=True, slots=True)
class EngineStatistics:
    """The engine's frame counters since it started, and its current frame rate."""

    frames_rendered: int
    frames_dropped: int
    frames_late: int
    fps: int


# EngineHealth.state values
ENGINE_STARTING = "starting"  # before its first frame
ENGINE_RUNNING = "running"
ENGINE_RESTARTING = "restarting"  # a supervised engine failed and waits for (or is in) its next start
ENGINE_PARKED = "parked"  # failed too often: not restarted until the session changes
ENGINE_FAILED = "failed"  # an in-process engine whose render thread died
ENGINE_STOPPED = "stopped"
ENGINE_STATES = (ENGINE_STARTING, ENGINE_RUNNING, ENGINE_RESTARTING, ENGINE_PARKED, ENGINE_FAILED, ENGINE_STOPPED)


@dataclass(frozen=True, slots=True)
class EngineHealth:
    """How a session's engine is doing, for ``getpipeline``, ``listsessions``, the stats and the logs."""

    mode: str  # "process" (a supervised engine process) or "thread" (a render thread in the daemon's process)
    state: str  # one of ENGINE_STATES
    reason: str | None = None  # why it is restarting, parked or failed (the last failure while running)
    pid: int | None = None  # the engine process (None in thread mode and between two processes)
    restarts: int = 0  # engine processes started after the first
    rss_bytes: int | None = None  # the engine process's resident memory, last measured

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "state": self.state,
            "reason": self.reason,
            "pid": self.pid,
            "restarts": self.restarts,
            "rss_mb": None if self.rss_bytes is None else round(self.rss_bytes / 2**20, 1),
        }


class EngineError(RuntimeError):
    """The engine could not start (no GL context) or died; the message says why."""


# --------------------------------------------------------------------------- the protocols


class EngineEvents(Protocol):
    """Where an engine reports: one call per event, on the control side's trio thread, in emission order.
    Must not block (it runs between frames of every session's reports)."""

    def on_event(self, event: Event) -> None: ...


class Engine(Protocol):
    """What the control side uses of a session's engine. Every method but :meth:`wait_first_frame` and
    :meth:`stop` returns at once."""

    def start(self) -> None:
        """Start rendering (once)."""
        ...

    async def wait_first_frame(self) -> None:
        """Returns once every compositor rendered a frame; :class:`EngineError` if the engine failed."""
        ...

    def submit(self, command: Command) -> None:
        """Hand over a command; latched at the next frame start (a batch never lands split over two frames)."""
        ...

    def preparing_command(self) -> AbstractContextManager[None]:
        """Around the preparation of a tune (parsed, checked, stored, then its ``ParamsUpdate`` submitted, or
        refused with an exception): a frame that starts meanwhile waits a little for it (an engine process: ``engine/process.py``; the
        in-process loop does so by itself, its frame waiting for the GIL the preparation holds)."""
        ...

    def push_frame(self, frame: PushedFrame) -> None:
        """A checked pushed frame (any thread): it waits in the node's one-frame slot, replacing (and
        counting as dropped) one not rendered yet."""
        ...

    def push_audio(self, audio: PushedAudio) -> None:
        """Checked pushed PCM (any thread): queued for the node's converter, in order; dropped and counted
        when too much waits already (the node's stats say so)."""
        ...

    def statistics(self) -> EngineStatistics: ...

    def preview(self, node_id: str) -> PreviewImage | None:
        """The latest thumbnail of a ``sink::preview`` node; None before its first."""
        ...

    def last_progress(self) -> float:
        """``time.monotonic()`` of the last completed frame (the start time before the first): the watchdog's input."""
        ...

    def health(self) -> EngineHealth:
        """What state the engine is in, and why."""
        ...

    def stop(self, timeout: float = 5.0) -> None:
        """Stop and wait up to ``timeout`` seconds for the engine to finish. Idempotent; blocks:
        call it from ``trio.to_thread.run_sync``."""
        ...


# Makes the engine of one session (not started yet); it reports to the given sink.
EngineFactory = Callable[[SessionRecord, EngineEvents], Engine]
