"""One render thread per pipeline: latch the inbox, resolve, draw, emit view data.

``RenderLoop`` is the in-process ``api.Engine``: commands come in through
``submit``, ``push_frame`` and ``push_audio``, events go out to one ``api.EngineEvents`` sink.

The render thread is the only thread that touches GL: it makes its context
(``render.gl_context.create_context``), draws with ``render.renderer.Renderer``
and releases everything before it ends. The trio thread talks to it through
two bounded structures:

- the *inbox* (trio -> render): latest params per node, the highest stamp per
  node and sender, the latest topology and the senders to forget. It is
  bounded by construction (nodes x senders) because it coalesces; every
  submission takes one lock, so a batch is never split, and the whole inbox is
  latched at the start of a frame (rule S4: one frame never shows half a batch).
- the *outbox* (render -> trio): the latest undelivered event per node and
  event type, handed over with ``run_sync_soon`` of the loop's *delivery*
  (in the daemon's process: its trio token, so events arrive on the trio
  thread; in an engine process: the thread that writes them to the control
  process's socket), with at most one delivery pending for the whole outbox.
  The render thread never blocks on delivery; when the receiver is gone,
  events are dropped. Replacing an undelivered event by a newer one loses
  nothing: each carries the whole layout and the whole acks map.

Rule S4, as applied here per compositor node (its view channel):

- after latching, stamped updates of the node are recorded in the node's
  view-channel ``AckBook`` (then ``ForgetSender`` commands are applied, S5);
- view data is emitted when the resolved layout differs from the last one
  emitted, or when the frame applied a stamped update of that node;
- the emission's stamp is the last stamped update of that node applied in the
  frame, or None (an input added, a source resized: server-caused);
- its acks are the node's AckBook as of that frame.

Pacing: frame n is due at ``t0 + n / fps`` on ``time.monotonic()``; the loop
sleeps until then, so there is no drift. A frame that ends after the next
frame's due time is *late*; the slots it overran are *dropped* (counted, never
rendered later: no catch-up bursts). A change of fps starts a new ``t0``.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import trio

from compositord.daemon.engine import api, compositor_graph, registry
from compositord.daemon.engine.animation import Animator
from compositord.daemon.engine.audio.buffer import AudioBuffer
from compositord.daemon.engine.audio.frame_audio import FrameAudio
from compositord.daemon.engine.audio.mixer import CompositorMixer, input_settings
from compositord.daemon.engine.compositor_graph import OutputUses
from compositord.daemon.engine.render import gl_context
from compositord.daemon.engine.render import renderer as renderer_module
from compositord.daemon.engine.render.frames import InputFrame, OutputFrame, TextureFrame
from compositord.daemon.engine.render.scene import resolve_scene
from compositord.daemon.engine.render_times import RenderTimeHistogram
from compositord.daemon.engine.scene_program import ProgramFrame, SceneProgram
from compositord.daemon.engine.sinks.base import Sink
from compositord.daemon.engine.sinks.compositor_preview import CompositorPreviews
from compositord.daemon.engine.sinks.sink_set import SinkSet
from compositord.daemon.engine.sources.base import FrameSource, SourceContext
from compositord.daemon.engine.sources.push import PushInlets, source_frame_from_pushed
from compositord.daemon.state.model import NodeRecord, SessionRecord
from compositord.protocol import params as params_schema
from compositord.protocol import scenes
from compositord.protocol.causal import AckBook, Stamp
from compositord.protocol.errors import RemoteProtocolError
from compositord.protocol.params import AUDIO_PUSH_KIND, COMPOSITOR_KIND, OUTPUT_PIN, PREVIEW_PIN, PUSH_KIND
from compositord.protocol.scenes import AnimateSpec

STATS_INTERVAL = 1.0  # seconds between nodestatsupdated emissions (at most)
METERS_INTERVAL = 0.1  # a compositor that mixes sound sends its stats, with its meters, this often (at most)
RENDER_MS_WINDOW = 1024  # render times kept for the percentiles (one stats interval at up to 240 fps, with room)
IDLE_FPS = 1  # a pipeline with no compositor still ticks (and reports progress) this often
SINK_CLOSE_TIMEOUT = 5.0  # seconds the render thread waits, when it ends, for sinks to finish their files


class Delivery(Protocol):
    """Where the outbox is handed over: ``run_sync_soon(fn)`` makes ``fn`` run soon on the receiving
    thread, never blocking the caller; it raises :class:`DeliveryClosed` (or trio's
    ``RunFinishedError``) once nobody receives any more. A ``trio.lowlevel.TrioToken`` is one."""

    def run_sync_soon(self, sync_fn: Callable[[], object]) -> None: ...


class DeliveryClosed(RuntimeError):
    """The receiver of a :class:`Delivery` is gone: later events are dropped."""


@dataclass
class _Inbox:
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    stamps: dict[str, dict[str, Stamp]] = field(default_factory=dict)  # node -> sender -> its highest stamp
    last_stamp: dict[str, Stamp] = field(default_factory=dict)  # node -> last stamp submitted
    topology: SessionRecord | None = None
    forget: set[str] = field(default_factory=set)
    # Compositor previews to start and stop, in the order asked (a start and a stop of one id may both wait).
    previews: list[api.StartCompositorPreview | api.StopCompositorPreview] = field(default_factory=list)
    # node -> JSON pointer -> how its latest change asked to be shown (None: at once); bounded by the params' leaves
    animations: dict[str, dict[str, AnimateSpec | None]] = field(default_factory=dict)
    # node -> the transition its latest update asked for its next program change, this once (the last asked wins)
    transitions: dict[str, Mapping[str, Any]] = field(default_factory=dict)

    def empty(self) -> bool:
        return not (self.params or self.stamps or self.topology is not None or self.forget or self.previews)


@dataclass
class _CompositorState:
    renderer: Any
    program: SceneProgram = field(default_factory=SceneProgram)
    acks: AckBook = field(default_factory=AckBook)
    last_layout: dict[str, Any] | None = None
    view_seq: int = 0
    render_ms: deque[float] = field(default_factory=lambda: deque(maxlen=RENDER_MS_WINDOW))
    render_histogram: RenderTimeHistogram = field(default_factory=RenderTimeHistogram)
    error: str | None = None
    params_source: dict[str, Any] | None = None  # the durable params `full` was made from
    full: dict[str, Any] = field(default_factory=dict)  # with defaults
    animator: Animator = field(default_factory=Animator)
    mixer: CompositorMixer = field(default_factory=CompositorMixer)
    audio_pins: tuple[str, ...] = ()  # the input pins whose sound the last frame mixed
    mix_ms: deque[float] = field(default_factory=lambda: deque(maxlen=RENDER_MS_WINDOW))
    render_stats: dict[str, Any] = field(default_factory=dict)  # the percentiles of the last stats interval
    transition_once: Mapping[str, Any] | None = None  # for the program change of the next frame only (api.ParamsUpdate)

    def full_params(self, durable: dict[str, Any]) -> dict[str, Any]:
        if durable is not self.params_source:
            self.full = params_schema.with_defaults(COMPOSITOR_KIND, durable)
            self.params_source = durable
        return self.full


class RenderLoop:
    """The in-process engine of one session (``api.Engine``): a render thread that makes its own GL context."""

    def __init__(
        self,
        session: SessionRecord,
        events: api.EngineEvents,
        *,
        trio_token: trio.lowlevel.TrioToken | None = None,
        delivery: Delivery | None = None,
        asset_dir: Path,
        output_dir: Path | None = None,
        device_index: int | None = None,
        min_free_disk_bytes: int | None = None,
        listen_hosts: tuple[str, ...] = api.LOOPBACK_HOSTS,
        before_latch: Callable[[], object] | None = None,
    ) -> None:
        self.session_id = session.session_id
        # Render thread, at each frame's start before the inbox is taken: an engine process reads what waits
        # on its socket (engine/process.py says why).
        self._before_latch = before_latch
        self._session = session.copy()
        self._events = events
        # Events reach the sink on trio's thread (``trio_token``) or on another receiving thread (``delivery``).
        if delivery is None:
            if trio_token is None:
                raise TypeError("RenderLoop needs a trio_token or a delivery")
            delivery = trio_token
        elif trio_token is not None:
            raise TypeError("RenderLoop takes a trio_token or a delivery, not both")
        self._delivery: Delivery = delivery
        self._asset_dir = Path(asset_dir)
        self._device_index = device_index

        self._inbox = _Inbox()
        self._inbox_lock = threading.Lock()
        # Under the inbox lock: the params last submitted per node, and the nodes that ever had an animated
        # edit (only their edits are compared leaf by leaf, to say which values an edit moves or ends).
        self._submitted: dict[str, dict[str, Any]] = {node_id: node.params for node_id, node in session.nodes.items()}
        self._animated_nodes: set[str] = set()
        self._outbox: dict[tuple[type, str], api.Event] = {}  # (event type, node id) -> the latest undelivered
        self._delivery_scheduled = False  # a _deliver is pending on the trio thread
        # Render thread: from a frame's latch to its end its events wait in the outbox and are handed over
        # together: the receiver then wakes once a frame, and takes the view data with the frame's end,
        # which is when the hub sends them anyway. (The stats after it, once a second, go on their own.)
        self._holding_outbox = False
        self._outbox_lock = threading.Lock()
        self._frame_ended = api.FrameEnded(self.session_id)  # immutable: the same one every frame

        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._settled = trio.Event()  # Started or Failed was delivered
        self._failed: api.Failed | None = None  # trio thread
        self._start_reported = False  # render thread
        self._failure: BaseException | None = None
        self._last_progress = time.monotonic()

        self._frames_rendered = 0
        self._frames_dropped = 0
        self._frames_late = 0
        self._fps = IDLE_FPS
        self._latest_output: dict[tuple[str, str], OutputFrame] = {}  # (compositor, output pin) -> its last frame
        self._render_order: list[str] = []  # render thread: compositors, each after those that feed it
        self._output_uses: dict[str, OutputUses] = {}  # render thread: who takes each compositor's outputs
        self._source_errors: dict[str, str] = {}  # render thread only
        self._source_conditions: dict[str, str] = {}  # live inputs' "connecting" / "live"; render thread only
        self._source_kinds: dict[str, str] = {}  # render thread only: the kind each live source was made for
        self._push_inlets = PushInlets()
        self._output_listeners: list[Callable[[str, OutputFrame], None]] = []
        self._media_time = 0.0  # the current frame's slot on the loop's clock (seconds), for sink timestamps
        self._frame_audio = FrameAudio()  # render thread: this frame's block of sound, read once per source
        # Sinks report errors and previews from their own threads through the outbox.
        self._sinks = SinkSet(
            self._report_node_state,
            self._report_preview,
            output_dir=output_dir,
            min_free_disk_bytes=min_free_disk_bytes,
            listen_hosts=listen_hosts,
        )
        self._compositor_previews = CompositorPreviews(self._report_compositor_preview)  # render thread

    # ------------------------------------------------------------------ trio side (api.Engine)

    def start(self) -> None:
        """Start the render thread (it makes its own GL context)."""
        if self._thread is not None:
            raise RuntimeError("RenderLoop.start() may be called only once")
        self._last_progress = time.monotonic()  # a grace period for the watchdog while GL starts
        self._thread = threading.Thread(target=self._thread_main, name=f"compositord-render({self.session_id})", daemon=True)
        self._thread.start()

    async def wait_first_frame(self) -> None:
        """Returns once every compositor has rendered a frame; ``api.EngineError`` if the thread failed."""
        await self._settled.wait()
        if self._failed is not None:
            reason = self._failure if self._failure is not None else self._failed.message
            raise api.EngineError(f"render loop of session {self.session_id!r} failed: {reason}") from self._failure

    def submit(self, command: api.Command) -> None:
        """Non-blocking; latched at the next frame start (a batch and its structure change in one frame)."""
        if isinstance(command, api.ParamsUpdate):
            with self._inbox_lock:
                self._put(command)
        elif isinstance(command, api.BatchUpdate):
            snapshot = command.topology.copy() if command.topology is not None else None
            with self._inbox_lock:
                for update in command.updates:
                    self._put(update)
                if snapshot is not None:
                    self._set_topology(snapshot)
        elif isinstance(command, api.TopologyUpdate):
            snapshot = command.session.copy()
            with self._inbox_lock:
                self._set_topology(snapshot)
        elif isinstance(command, api.ForgetSender):
            self._forget_sender(command.sender)
        elif isinstance(command, (api.StartCompositorPreview, api.StopCompositorPreview)):
            with self._inbox_lock:
                # Bounded: the control side starts one preview per compositor, size and rate, and stops it once.
                self._inbox.previews.append(command)
        elif isinstance(command, api.Stop):
            self._stop.set()
        else:
            raise TypeError(f"not an engine command: {command!r}")

    def preparing_command(self) -> contextlib.AbstractContextManager[None]:
        """Nothing to announce in-process: a frame that starts while the trio thread prepares a command waits
        for the GIL anyway."""
        return contextlib.nullcontext()

    def _set_topology(self, snapshot: SessionRecord) -> None:
        self._inbox.topology = snapshot
        # Params queued before this snapshot are in it already (the store is updated first).
        self._inbox.params = {n: p for n, p in self._inbox.params.items() if n in snapshot.nodes}
        self._submitted = {node_id: node.params for node_id, node in snapshot.nodes.items()}
        self._animated_nodes &= snapshot.nodes.keys()

    def _forget_sender(self, sender: str) -> None:
        with self._inbox_lock:
            self._inbox.forget.add(sender)
            for per_sender in self._inbox.stamps.values():
                per_sender.pop(sender, None)
            for node_id in [n for n, s in self._inbox.last_stamp.items() if s.sender == sender]:
                del self._inbox.last_stamp[node_id]

    def _put(self, update: api.ParamsUpdate) -> None:
        inbox = self._inbox
        if update.animate is not None or update.node_id in self._animated_nodes:
            self._animated_nodes.add(update.node_id)
            marks = inbox.animations.setdefault(update.node_id, {})
            for path in scenes.changed_leaves(self._submitted.get(update.node_id, {}), update.params):
                marks[path] = update.animate
        self._submitted[update.node_id] = update.params
        inbox.params[update.node_id] = dict(update.params)
        if update.transition is not None:
            inbox.transitions[update.node_id] = update.transition
        stamp = update.stamp
        if stamp is not None:
            senders = inbox.stamps.setdefault(update.node_id, {})
            highest = senders.get(stamp.sender)
            if highest is None or stamp.rev > highest.rev:
                senders[stamp.sender] = stamp
            inbox.last_stamp[update.node_id] = stamp

    def push_frame(self, frame: api.PushedFrame) -> None:
        """A checked pushed frame for its ``video::push`` node (any thread; never blocks): it waits in the
        node's one-frame slot, replacing (and counting as dropped) one not rendered yet."""
        self._push_inlets.slot(frame.node_id).push(source_frame_from_pushed(frame), frame.pts_us / 1_000_000)

    def push_frame_lost(self, node_id: str) -> None:
        """A frame pushed to ``node_id`` that a newer one overwrote before the engine could read it (an engine
        process's push slot): counted in the node's stats as received and dropped (any thread)."""
        self._push_inlets.slot(node_id).lost()

    def push_audio(self, audio: api.PushedAudio) -> None:
        """Checked pushed PCM for its ``audio::push`` node (any thread; never blocks): queued, copied, for the
        node's converter thread (``audio.push``); dropped and counted when too much waits already."""
        inlet = self._push_inlets.audio(audio.node_id)
        if inlet is not None:
            inlet.put(audio)

    def last_progress(self) -> float:
        """``time.monotonic()`` of the last completed frame (start() time before the first)."""
        return self._last_progress

    def statistics(self) -> api.EngineStatistics:
        return api.EngineStatistics(self._frames_rendered, self._frames_dropped, self._frames_late, self._fps)

    def health(self) -> api.EngineHealth:
        if self._failure is not None:
            reason = "".join(traceback.format_exception_only(type(self._failure), self._failure)).strip()
            return api.EngineHealth("thread", api.ENGINE_FAILED, reason)
        if self._thread is None or not self._thread.is_alive():
            return api.EngineHealth("thread", api.ENGINE_STOPPED if self._stop.is_set() else api.ENGINE_STARTING)
        return api.EngineHealth("thread", api.ENGINE_RUNNING if self._start_reported else api.ENGINE_STARTING)

    def preview(self, node_id: str) -> api.PreviewImage | None:
        """The latest thumbnail of a ``sink::preview`` node, or None."""
        return self._sinks.preview(node_id)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop and join the render thread (it releases its GL objects first). Idempotent."""
        self.submit(api.Stop())
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # ------------------------------------------------------------------ beyond api.Engine: tests, benchmarks

    def latest_output(self, node_id: str, pin: str = OUTPUT_PIN) -> OutputFrame | None:
        """The last frame a compositor node read back on an output pin (a failed frame leaves the one before);
        any thread may read it. A program output that only other compositors take is not read back."""
        return self._latest_output.get((node_id, pin))

    def sink(self, node_id: str) -> Sink | None:
        """The running sink of a sink node, or None; any thread may call it."""
        return self._sinks.get(node_id)

    def pushed_audio(self, node_id: str) -> AudioBuffer | None:
        """The buffer an ``audio::push`` node's sound goes into once converted, or None before any arrived;
        any thread may read it (the mixer reads it too: a test reads a node no compositor takes)."""
        inlet = self._push_inlets.existing_audio(node_id)
        return inlet.buffer if inlet is not None else None

    def add_output_listener(self, listener: Callable[[str, OutputFrame], None]) -> None:
        """``listener(node_id, frame)`` runs on the render thread after every frame: it must not
        block (a sink hands the frame to its own thread through a bounded queue)."""
        self._output_listeners = [*self._output_listeners, listener]

    @property
    def frame_interval(self) -> float:
        """Seconds from one frame to the next at the current rate (any thread)."""
        return 1.0 / self._fps

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------------ delivery to trio

    def _emit(self, event: api.Event, node_id: str = "") -> None:
        key = (type(event), node_id)
        with self._outbox_lock:
            self._outbox.pop(key, None)  # a replaced event moves to the back: delivered after what came before it
            self._outbox[key] = event
            if self._delivery_scheduled or (self._holding_outbox and threading.current_thread() is self._thread):
                return
            self._delivery_scheduled = True
        self._hand_over()

    def _release_outbox(self) -> None:
        """Render thread, at a frame's end: hand over what the frame emitted."""
        self._holding_outbox = False
        with self._outbox_lock:
            if self._delivery_scheduled or not self._outbox:
                return
            self._delivery_scheduled = True
        self._hand_over()

    def _hand_over(self) -> None:
        try:
            # One hand-over for everything emitted meanwhile: each run_sync_soon writes trio's wake-up
            # socket, and that system call gives the GIL away, which costs the render thread up to a
            # GIL switch interval to get back while the trio thread is busy.
            self._delivery.run_sync_soon(self._deliver)
        except (trio.RunFinishedError, DeliveryClosed):
            with self._outbox_lock:
                self._outbox.clear()
                self._delivery_scheduled = False

    def _deliver(self) -> None:
        """On the receiving thread (trio's, or an engine process's socket writer): everything in the outbox, in the order emitted."""
        with self._outbox_lock:
            outbox, self._outbox = self._outbox, {}
            self._delivery_scheduled = False
        for event in outbox.values():
            if isinstance(event, (api.Started, api.Failed)):
                if isinstance(event, api.Failed) and not self._settled.is_set():
                    self._failed = event
                self._settled.set()
            self._events.on_event(event)

    def _report_node_state(self, node_id: str, message: str | None, condition: str | None = None) -> None:
        self._emit(api.NodeState(self.session_id, node_id, message, condition), node_id)

    def _report_preview(self, node_id: str, image: api.PreviewImage) -> None:
        self._emit(api.PreviewUpdated(self.session_id, node_id, image), node_id)

    def _report_compositor_preview(self, preview_id: str, node_id: str, image: api.PreviewImage, rendered_at: float) -> None:
        # Keyed by preview: two previews of one compositor (two sizes) must not replace each other's image.
        self._emit(
            api.CompositorPreviewUpdated(self.session_id, preview_id, node_id, image, rendered_at), f"preview:{preview_id}"
        )

    def _report_started(self) -> None:
        if not self._start_reported:
            self._start_reported = True
            self._emit(api.Started(self.session_id))

    # ------------------------------------------------------------------ render thread

    def _thread_main(self) -> None:
        ctx = None
        compositors: dict[str, _CompositorState] = {}
        sources: dict[str, FrameSource] = {}
        failure: str | None = None
        try:
            ctx = gl_context.create_context(self._device_index)
            self._run_frames(ctx, compositors, sources)
        except BaseException as exc:
            self._failure = exc
            failure = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            for node_id in compositors or [n for n, node in self._session.nodes.items() if node.kind == COMPOSITOR_KIND]:
                self._report_node_state(node_id, f"render loop stopped: {failure}")
        finally:
            self._release_outbox()  # a frame that raised: what it emitted goes out with what follows
            for state in compositors.values():
                try:
                    state.renderer.release()
                except Exception:
                    # Teardown goes on (sources, sinks and the context still need closing), but a
                    # release that fails is a bug worth seeing, as in _close_source.
                    traceback.print_exc()
            for source in sources.values():
                _close_source(source)
            self._push_inlets.close(SINK_CLOSE_TIMEOUT)
            self._sinks.close_all(SINK_CLOSE_TIMEOUT)  # files get their trailers before the loop counts as stopped
            self._compositor_previews.close_all(SINK_CLOSE_TIMEOUT)
            if ctx is not None:
                ctx.release()
            if failure is None and not self._start_reported:
                failure = "stopped before its first frame"
            if failure is not None:
                self._emit(api.Failed(self.session_id, failure))  # waiters learn of it instead of hanging

    def _run_frames(self, ctx: Any, compositors: dict[str, _CompositorState], sources: dict[str, FrameSource]) -> None:
        started = time.monotonic()
        self._sync_topology(ctx, compositors, sources, changed_sources=set(self._session.nodes))
        fps = self._fps
        period = 1.0 / fps
        t0 = time.monotonic()
        n = 0  # the slot of the next frame: due at t0 + n * period
        media_base = 0.0  # the loop's clock at t0 (sums the slots of earlier fps segments)
        next_stats = t0 + STATS_INTERVAL
        next_meters = t0 + METERS_INTERVAL
        while not self._stop.is_set():
            delay = t0 + n * period - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            if self._before_latch is not None:
                self._before_latch()
            self._holding_outbox = True
            applied_stamps = self._latch(ctx, compositors, sources)
            for source_id, source in sources.items():
                self._set_source_error(source_id, getattr(source, "error", None), getattr(source, "condition", None))
            if self._fps != fps:
                # This frame's params changed the rate: the new schedule starts with this frame.
                media_base += n * period
                fps = self._fps
                period = 1.0 / fps
                t0, n = time.monotonic(), 0
            self._media_time = media_base + n * period
            frame_time = time.monotonic() - started
            self._frame_audio.next_frame(self._media_time, period, frame_time)
            pictures: dict[tuple[str, str], TextureFrame] = {}  # this frame's compositor outputs other compositors take
            for node_id in self._render_order:
                state = compositors.get(node_id)
                if state is not None:
                    self._render_compositor(node_id, state, sources, pictures, applied_stamps.get(node_id), frame_time)
            self._emit(self._frame_ended)  # after this frame's view data: the hub sends them together
            self._release_outbox()  # the frame's events, its end last, in one hand-over
            finished = time.monotonic()
            self._frames_rendered += 1
            self._last_progress = finished
            self._report_started()
            n += 1
            if finished > t0 + n * period:
                # Late: the slots this frame overran are dropped, never caught up.
                self._frames_late += 1
                overran_to = math.floor((finished - t0) / period) + 1
                self._frames_dropped += overran_to - n
                n = overran_to
            stats_sent = finished >= next_stats
            if stats_sent:
                self._emit_stats(compositors)  # with the meters of compositors that mix sound
                self._emit_source_stats(sources)
                next_stats = finished + STATS_INTERVAL
            if finished >= next_meters:
                if not stats_sent:
                    self._emit_meters(compositors)
                # On a fixed grid, so frame-period jitter does not slow the rate; never a burst after a stall.
                next_meters += METERS_INTERVAL
                if next_meters <= finished:
                    next_meters = finished + METERS_INTERVAL

    def _latch(self, ctx: Any, compositors: dict[str, _CompositorState], sources: dict[str, FrameSource]) -> dict[str, Stamp]:
        """Take the whole inbox at once and apply it; returns the last stamp applied per node."""
        with self._inbox_lock:
            if self._inbox.empty():
                return {}
            inbox, self._inbox = self._inbox, _Inbox()
        changed_sources: set[str] = set()
        if inbox.topology is not None:
            old = self._session
            self._session = inbox.topology
            changed_sources = {
                node_id
                for node_id, node in self._session.nodes.items()
                if node_id not in old.nodes or old.nodes[node_id].params != node.params or old.nodes[node_id].kind != node.kind
            }
        for node_id, node_params in inbox.params.items():
            node = self._session.nodes.get(node_id)
            if node is None:
                continue
            self._session.nodes[node_id] = NodeRecord(node_id, node.kind, node_params, node.seq)
            changed_sources.add(node_id)
        self._sync_topology(ctx, compositors, sources, changed_sources)
        for command in inbox.previews:
            if isinstance(command, api.StopCompositorPreview):
                self._compositor_previews.stop(command.preview_id)
            elif command.node_id in compositors:
                self._compositor_previews.start(command)
        if inbox.topology is not None:
            # A node removed and added again between two frames looks unchanged here, but the
            # session forgot its error with the removal: say again what is still wrong.
            for node_id in {*self._source_errors, *self._source_conditions}:
                self._report_node_state(node_id, self._source_errors.get(node_id), self._source_conditions.get(node_id))
            for node_id, state in compositors.items():
                if state.error is not None:
                    self._report_node_state(node_id, state.error)
            for node_id, message in self._sinks.standing_errors().items():
                self._report_node_state(node_id, message)
        for node_id, marks in inbox.animations.items():
            animated = compositors.get(node_id)
            if animated is not None and animated.params_source is not None and node_id in self._session.nodes:
                before = animated.full
                after = animated.full_params(self._session.nodes[node_id].params)
                for path, spec in marks.items():
                    animated.animator.edited(path, spec, before, after, self._fps)
        for node_id, transition in inbox.transitions.items():
            if (latched := compositors.get(node_id)) is not None:
                latched.transition_once = transition
        applied: dict[str, Stamp] = {}
        for node_id, senders in inbox.stamps.items():
            stamped = compositors.get(node_id)
            if stamped is None:
                continue  # only compositors have a view channel
            for stamp in senders.values():
                try:
                    stamped.acks.check(stamp)
                except RemoteProtocolError:
                    continue  # acknowledged already (S2): the session logic refuses replays before they get here
                stamped.acks.record(stamp)
            if node_id in inbox.last_stamp:
                applied[node_id] = inbox.last_stamp[node_id]
        for sender in inbox.forget:
            for state in compositors.values():
                state.acks.forget(sender)
        return applied

    def _sync_topology(
        self,
        ctx: Any,
        compositors: dict[str, _CompositorState],
        sources: dict[str, FrameSource],
        changed_sources: set[str],
    ) -> None:
        """Make renderers and sources match the session; reconfigure sources whose params changed."""
        nodes = self._session.nodes
        for node_id in [n for n in compositors if n not in nodes or nodes[n].kind != COMPOSITOR_KIND]:
            compositors.pop(node_id).renderer.release()
            for pin in params_schema.output_pins(COMPOSITOR_KIND):
                self._latest_output.pop((node_id, pin), None)
        self._render_order = compositor_graph.render_order(self._session)
        self._output_uses = compositor_graph.output_uses(self._session, lambda kind: registry.sink(kind) is not None)
        for node_id in [n for n in sources if n not in nodes or nodes[n].kind != self._source_kinds.get(n)]:
            _close_source(sources.pop(node_id))
            self._source_kinds.pop(node_id, None)
        for node_id in [n for n in self._source_errors if n not in nodes]:
            del self._source_errors[node_id]  # a node added again under this id starts without a reported error
        for node_id in [n for n in self._source_conditions if n not in nodes]:
            del self._source_conditions[node_id]
        self._push_inlets.retain(n for n, node in nodes.items() if node.kind in (PUSH_KIND, AUDIO_PUSH_KIND))
        fps_values = []
        for node_id, node in nodes.items():
            if node.kind == COMPOSITOR_KIND:
                full = params_schema.with_defaults(COMPOSITOR_KIND, node.params)
                fps_values.append(int(full["fps"]))
                if node_id not in compositors:
                    try:
                        renderer = renderer_module.Renderer(
                            ctx, full["width"], full["height"], full["output_format"], full["color_matrix"], self._asset_dir
                        )
                    except Exception as exc:
                        # This compositor stays dark (retried at the next change); the others render on.
                        self._report_node_state(node_id, f"cannot set up rendering: {type(exc).__name__}: {exc}")
                        continue
                    compositors[node_id] = _CompositorState(renderer)
            elif (implementation := registry.source(node.kind)) is not None and (
                node_id in changed_sources or node_id not in sources
            ):
                self._configure_source(node_id, node, implementation, sources)
        self._fps = max(fps_values) if fps_values else IDLE_FPS
        self._sinks.sync(self._session, changed_sources)
        self._compositor_previews.retain(compositors)

    def _configure_source(
        self, node_id: str, node: NodeRecord, implementation: registry.SourceKind, sources: dict[str, FrameSource]
    ) -> None:
        try:
            full = params_schema.with_defaults(node.kind, node.params) if node.kind in params_schema.KINDS else node.params
            source = sources.get(node_id)
            if source is None:
                source = sources[node_id] = implementation.make(full, SourceContext(node_id, self._asset_dir, self._push_inlets))
                self._source_kinds[node_id] = node.kind
            else:
                source.configure(full)
        except Exception as exc:
            # The input shows nothing until its params are fixed; the node says why.
            _close_source(sources.pop(node_id, None))
            self._source_kinds.pop(node_id, None)
            self._set_source_error(node_id, f"{node.kind}: {exc}")
        else:
            # A source that works in the background (a decoder) keeps its error until it has checked the new params.
            self._set_source_error(node_id, getattr(source, "error", None), getattr(source, "condition", None))

    def _set_source_error(self, node_id: str, message: str | None, condition: str | None = None) -> None:
        """Report a source node's error state, and a live input's condition, when either changed (render thread)."""
        if self._source_errors.get(node_id) == message and self._source_conditions.get(node_id) == condition:
            return
        for kept, value in ((self._source_errors, message), (self._source_conditions, condition)):
            if value is None:
                kept.pop(node_id, None)
            else:
                kept[node_id] = value
        self._report_node_state(node_id, message, condition)

    def _emit_source_stats(self, sources: Mapping[str, FrameSource]) -> None:
        for node_id, source in sources.items():
            stats = getattr(source, "stats", None)
            if stats is not None:
                self._emit(api.NodeStats(self.session_id, node_id, stats()), node_id)

    def _render_compositor(
        self,
        node_id: str,
        state: _CompositorState,
        sources: Mapping[str, FrameSource],
        pictures: dict[tuple[str, str], TextureFrame],
        stamp: Stamp | None,
        t: float,
    ) -> None:
        node = self._session.nodes[node_id]
        uses = self._output_uses.get(node_id, OutputUses())
        started = time.perf_counter()
        error: str | None = None
        outputs: dict[str, OutputFrame | None] = {}
        scene_errors: list[tuple[str, str]] = []
        audio_error: str | None = None
        try:
            full = state.animator.next_frame(state.full_params(node.params))
            frames = self._input_frames(node_id, full, sources, pictures, t)
            renderer = state.renderer
            transition_once, state.transition_once = state.transition_once, None
            plan = state.program.next_frame(
                full, self._fps, can_snapshot=renderer.program_texture() is not None, transition=transition_once
            )
            audio_error = self._mix_audio(node_id, state, full, plan, sources, uses)
            scene = resolve_scene(plan.params, frames, asset_dir=self._asset_dir)
            scene_errors += scene.errors
            transition = None
            outgoing = None
            if plan.outgoing_params is not None:
                outgoing = resolve_scene(plan.outgoing_params, frames, asset_dir=self._asset_dir)
                scene_errors += outgoing.errors
            if plan.mix is not None:
                transition = renderer_module.Transition(plan.mix, outgoing)
            # Read back what sinks and listeners take; a program only other compositors take stays a texture.
            read_program = uses.program_to_sinks or bool(self._output_listeners) or not uses.program_to_compositors
            renderer.begin_frame()
            try:
                if plan.take_snapshot:
                    renderer.take_snapshot()
                outputs[OUTPUT_PIN] = renderer.draw_program(
                    scene, frames, transition=transition, read_back=read_program, keep_rgba=uses.program_to_compositors
                )
                if uses.program_to_compositors and (picture := renderer.program_texture()) is not None:
                    pictures[(node_id, OUTPUT_PIN)] = picture
                if uses.preview_wanted and full["preview_scene"] is not None:
                    preview = resolve_scene(scenes.scene_params(full, full["preview_scene"]), frames, asset_dir=self._asset_dir)
                    scene_errors += preview.errors
                    outputs[PREVIEW_PIN] = renderer.draw_preview(preview, frames, read_back=uses.preview_to_sinks)
                    if uses.preview_to_compositors and (picture := renderer.preview_texture()) is not None:
                        pictures[(node_id, PREVIEW_PIN)] = picture
            finally:
                renderer.end_frame(frames)
        except Exception as exc:
            error = f"frame failed: {type(exc).__name__}: {exc}"
            plan = None
        state.render_ms.append((time.perf_counter() - started) * 1000.0)
        if plan is not None:
            overlay_errors = dict(scene_errors)
            overlay_errors.update(getattr(state.renderer, "overlay_errors", {}) or {})
            if overlay_errors:
                error = "; ".join(f"overlay {key}: {message}" for key, message in sorted(overlay_errors.items()))
            if audio_error is not None:
                error = audio_error if error is None else f"{error}; {audio_error}"
            audio = None
            if not uses.program_to_sinks:
                state.mixer.discard_held()
            elif outputs.get(OUTPUT_PIN) is not None:
                audio = state.mixer.take()  # a failed frame's sound rides with the next frame that reaches the sinks
            for pin, output in outputs.items():
                if output is None:
                    continue
                self._latest_output[(node_id, pin)] = output
                if pin == OUTPUT_PIN:
                    for listener in self._output_listeners:
                        try:
                            listener(node_id, output)
                        except Exception as exc:  # a sink's bug must not stop the pipeline
                            error = f"output listener {getattr(listener, '__qualname__', listener)!s} failed: {exc}"
                    self._compositor_previews.deliver(node_id, output, self._media_time, self._fps)
                self._sinks.deliver(
                    node_id, output, self._media_time, self._fps, pin=pin, audio=audio if pin == OUTPUT_PIN else None
                )
            # A held T-bar leaves the program scene on program: its boxes are what the view data shows.
            layout = (outgoing if plan.manual and outgoing is not None else scene).layout()
            if plan.scene is not None:
                layout["scene"] = plan.scene
            if plan.transition is not None:
                layout["transition"] = plan.transition
            if layout != state.last_layout or stamp is not None:
                state.last_layout = layout
                state.view_seq += 1
                self._emit(
                    api.ViewData(self.session_id, node_id, layout, stamp, state.acks.as_dict(), state.view_seq, time.time()),
                    node_id,
                )
        if error != state.error:
            state.error = error
            self._report_node_state(node_id, error)

    def _mix_audio(
        self,
        node_id: str,
        state: _CompositorState,
        full: Mapping[str, Any],
        plan: ProgramFrame,
        sources: Mapping[str, FrameSource],
        uses: OutputUses,
    ) -> str | None:
        """Mix this frame's sound of the compositor's inputs and hold it for its sinks; an error message or None.

        Runs before the picture is drawn, so a frame that fails to draw still has its sound (it rides
        with the next frame); a failure here leaves the picture alone."""
        settings = full["audio"]
        frame_audio = self._frame_audio
        if not settings["enabled"] or frame_audio.count == 0:
            state.audio_pins = ()
            return None
        started = time.perf_counter()
        try:
            pins = set(params_schema.input_pins(COMPOSITOR_KIND, full))
            inputs = {}
            for pin, conn in sorted(self._session.inputs_of(node_id).items()):
                if pin not in pins:
                    continue
                source = sources.get(conn.from_node)
                if source is not None:
                    samples = frame_audio.of_source(conn.from_node, source)
                else:
                    samples = frame_audio.of_compositor(conn.from_node, conn.from_pin)
                if samples is not None:
                    inputs[pin] = samples
            state.audio_pins = tuple(inputs)
            mixer = state.mixer
            if not inputs:
                mixer.mix(frame_audio.start, inputs, {}, sample_rate=settings["sample_rate"], layout=settings["channels"])
                return None  # the common case of a compositor without sound: no presences, no settings
            layers = plan.params["layers"]
            presences = mixer.presence.next_frame(
                layers,
                transition=plan.transition,
                outgoing_layers=plan.outgoing_params["layers"] if plan.outgoing_params is not None else None,
            )
            block = mixer.mix(
                frame_audio.start,
                inputs,
                input_settings(layers, presences),
                sample_rate=settings["sample_rate"],
                layout=settings["channels"],
            )
            if block is not None:
                if uses.program_to_compositors and mixer.bus_mix is not None:
                    frame_audio.put_mix(node_id, OUTPUT_PIN, mixer.bus_mix)
                mixer.hold(block)
        except Exception as exc:
            return f"audio mix failed: {type(exc).__name__}: {exc}"
        finally:
            state.mix_ms.append((time.perf_counter() - started) * 1000.0)
        return None

    def _input_frames(
        self,
        node_id: str,
        full: Mapping[str, Any],
        sources: Mapping[str, FrameSource],
        pictures: Mapping[tuple[str, str], TextureFrame],
        t: float,
    ) -> dict[str, InputFrame]:
        """This frame's picture of every connected input pin: a source's frame, or another compositor's
        output drawn earlier in this frame (left out when there is none yet)."""
        pins = set(params_schema.input_pins(COMPOSITOR_KIND, full))
        frames: dict[str, InputFrame] = {}
        for pin, conn in sorted(self._session.inputs_of(node_id).items()):
            if pin not in pins:
                continue
            picture = pictures.get((conn.from_node, conn.from_pin))
            if picture is not None:
                frames[pin] = picture
                continue
            source = sources.get(conn.from_node)
            if source is not None:
                frame = source.frame(t)
                if frame is not None:  # None: nothing to show yet, the layer is left out
                    frames[pin] = frame
        return frames

    def _emit_stats(self, compositors: Mapping[str, _CompositorState]) -> None:
        for node_id, state in compositors.items():
            samples = np.fromiter(state.render_ms, dtype=float)
            state.render_ms.clear()
            state.render_histogram.observe(samples)
            p50, p90, p99 = np.percentile(samples, [50, 90, 99]) if samples.size else (0.0, 0.0, 0.0)
            state.render_stats = {
                "render_ms_p50": round(float(p50), 3),
                "render_ms_p90": round(float(p90), 3),
                "render_ms_p99": round(float(p99), 3),
                "render_histogram": state.render_histogram.as_stats(),
            }
            mix_ms = np.fromiter(state.mix_ms, dtype=float)
            state.mix_ms.clear()
            state.render_stats["audio_mix_ms_p50"], state.render_stats["audio_mix_ms_max"] = (
                (round(float(np.percentile(mix_ms, 50)), 3), round(float(mix_ms.max()), 3)) if mix_ms.size else (0.0, 0.0)
            )
            self._emit_compositor_stats(node_id, state)
        for node_id, stats in self._sinks.stats().items():
            self._emit(api.NodeStats(self.session_id, node_id, stats), node_id)

    def _emit_meters(self, compositors: Mapping[str, _CompositorState]) -> None:
        """The stats of each compositor that mixed sound since its last stats: its meters at 10 Hz."""
        for node_id, state in compositors.items():
            if state.mixer.mix_meter.fed:
                self._emit_compositor_stats(node_id, state)

    def _emit_compositor_stats(self, node_id: str, state: _CompositorState) -> None:
        stats = {
            "frames_rendered": self._frames_rendered,
            "frames_dropped": self._frames_dropped,
            "frames_late": self._frames_late,
            "fps": self._fps,
            **state.render_stats,
        }
        meters = state.mixer.reading(state.audio_pins)
        if meters is not None:
            stats["audio"] = meters
        self._emit(api.NodeStats(self.session_id, node_id, stats), node_id)


def _close_source(source: Any) -> None:
    """Stop a source's threads, if it has any (a bug there must not end the render loop)."""
    close = getattr(source, "close", None)
    if close is not None:
        try:
            close()
        except Exception:
            traceback.print_exc()
