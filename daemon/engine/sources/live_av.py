"""What every live input opened through PyAV shares: ``video::capture`` and ``av::stream_in``.

A :class:`LiveAVSource` runs one receiver thread. It opens its input (a
device, a display, a network URL: an :class:`AVInput` made from the node's
params by the kind's module), decodes video, and pushes each frame with its
timestamp into a :class:`FramePacer`, which shows it on the output clock
(drift corrected by dropping or repeating frames, counted in stats). The
render thread only ever takes from the pacer: it never opens, reads or waits.

Every open and every read has a timeout (PyAV's ``timeout=(open, read)``,
which also lets FFmpeg give the GIL back while it waits), so the thread
notices new params and ``close`` within that time.

State, read by the render loop every frame: ``condition`` is ``connecting``
(opening, waiting for a publisher, or for a peer that went away) or
``live`` (frames arrive); ``error`` says why the last attempt failed (a
missing device, a refused connection). After a failure it tries again with
backoff (``BACKOFF_MIN_S`` doubling to ``BACKOFF_MAX_S``; new params retry at
once); after a peer that was live goes away it reconnects at once. An open
that only timed out (nobody published yet) is not an error: the node stays
``connecting``.

Audio: the receiver demuxes the first audio stream too when an
``audio_consumer`` is attached (given to the constructor, or
``attach_audio``): it tells the consumer at each (re)open which audio stream
it found (``opened``), then hands it every decoded ``av.AudioFrame`` on this
thread; without one, audio packets are not even demuxed. ``av::stream_in``
attaches a ``live_sound.LiveSound``, whose buffer is the node's ``audio``;
``video::capture`` attaches none (x11grab and V4L2 carry no sound): its
``audio`` is None.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import av

from compositord.daemon.engine.audio.buffer import AudioBuffer
from compositord.daemon.engine.render.frames import SourceFrame
from compositord.daemon.engine.sources.pacing import DEFAULT_CAPACITY as PACER_DEFAULT_CAPACITY
from compositord.daemon.engine.sources.pacing import FramePacer
from compositord.daemon.engine.sources.video_file import describe_av_error, source_frame_from_av

log = logging.getLogger(__name__)

BACKOFF_MIN_S = 0.25
BACKOFF_MAX_S = 8.0
CLOSE_JOIN_S = 0.5  # close() waits this long at most for the receiver thread
DEFAULT_OPEN_TIMEOUT_S = 5.0
DEFAULT_READ_TIMEOUT_S = 3.0  # no packet for this long: the peer is gone, reconnect


@dataclass(frozen=True)
class AVInput:
    """What to open: ``av.open(url, format=format, options=options)``; ``label`` names it in errors."""

    url: str
    format: str | None
    options: Mapping[str, str] = field(default_factory=dict)
    label: str = ""
    open_timeout_s: float = DEFAULT_OPEN_TIMEOUT_S
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S
    latency_s: float = 0.05  # the pacer's room for arrival jitter


class InputFault(Exception):
    """The input cannot be used as asked (no video stream...): shown as the node's error."""


class AudioConsumer(Protocol):
    """Takes a live input's sound on the receiver thread."""

    def opened(self, stream: Any | None) -> None:
        """Each (re)open: the audio stream that will be decoded, or None when the input has none."""

    def __call__(self, frame: Any) -> None:
        """One decoded ``av.AudioFrame``."""


class LiveAVSource:
    """A live input; ``describe(params)`` turns the node's params into an :class:`AVInput` (ValueError: bad params)."""

    def __init__(
        self,
        params: Mapping[str, Any],
        describe: Callable[[Mapping[str, Any]], AVInput],
        *,
        name: str,
        audio_consumer: AudioConsumer | None = None,
        pacer_capacity: int = PACER_DEFAULT_CAPACITY,
    ) -> None:
        self._describe = describe
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._generation = 0
        self._wanted: AVInput | None = None
        self._pacer: FramePacer[SourceFrame] = FramePacer(capacity=pacer_capacity)
        self._frame: SourceFrame | None = None
        self._taken_at: float | None = None
        self._audio_consumer = audio_consumer
        self.audio: AudioBuffer | None = None  # the sound the mixer reads (a subclass that has sound sets it)
        self.error: str | None = None  # written by the receiver thread, read by the render loop
        self.condition: str = "connecting"
        self.connects = 0  # times the input went live
        self.frames_decoded = 0
        self.configure(params)
        self._thread = threading.Thread(target=self._run, name=f"compositord-{name}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ render thread

    def configure(self, params: Mapping[str, Any]) -> None:
        wanted = self._describe(params)
        with self._lock:
            if wanted == self._wanted and self.error is None:
                return
            self._generation += 1  # new params, or the same again while failing: open afresh now
            self._wanted = wanted
        self._pacer.set_latency(wanted.latency_s)
        self._wake.set()

    def frame(self, t: float = 0.0) -> SourceFrame | None:
        if t != self._taken_at:  # once per output frame, however many compositors read this input
            self._taken_at = t
            newest = self._pacer.take()
            if newest is not None:
                self._frame = newest
        return self._frame

    def stats(self) -> dict[str, Any]:
        return {
            **self._pacer.stats(),
            "frames_decoded": self.frames_decoded,
            "connects": self.connects,
            "state": self.condition,
            **({} if self.audio is None else {"audio": self.audio.stats()}),
        }

    def attach_audio(self, consumer: AudioConsumer | None) -> None:
        """Hand decoded audio to ``consumer`` from the next (re)open on; None: audio is not demuxed."""
        with self._lock:
            self._audio_consumer = consumer
            self._generation += 1
        self._wake.set()

    def close(self, timeout: float = CLOSE_JOIN_S) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def pacer(self) -> FramePacer[SourceFrame]:
        """Shows the pictures on the output clock; sound keeps in step through its ``due_time``."""
        return self._pacer

    @property
    def receiver_alive(self) -> bool:
        return self._thread.is_alive()

    # ------------------------------------------------------------------ receiver thread

    def _current(self) -> tuple[int, AVInput, AudioConsumer | None]:
        with self._lock:
            assert self._wanted is not None
            return self._generation, self._wanted, self._audio_consumer

    def _superseded(self, generation: int) -> bool:
        return self._stop.is_set() or self._current()[0] != generation

    def _run(self) -> None:
        backoff = BACKOFF_MIN_S
        while not self._stop.is_set():
            generation, wanted, audio_consumer = self._current()
            self.condition = "connecting"
            self._pacer.reset()
            try:
                went_live = self._receive(wanted, generation, audio_consumer)
            except InputFault as fault:
                self.error = f"{wanted.label}: {fault}"
            except av.error.ExitError:
                # The open or a read timed out: nobody published yet, or the peer went quiet. Not an error.
                continue
            except (av.error.FFmpegError, OSError, ValueError) as exc:
                self.error = f"{wanted.label}: {describe_av_error(exc)}"
            except Exception as exc:  # a bug here: the node says so instead of going quietly dark
                log.exception("receiver of %s failed", wanted.label)
                self.error = f"{wanted.label}: receiver failed: {type(exc).__name__}: {exc}"
            else:
                if went_live:
                    backoff = BACKOFF_MIN_S
                    continue  # the peer went away after it was live: open again at once
                if self._superseded(generation):
                    continue
                self.error = f"{wanted.label}: ended before its first frame"
            self._wait(backoff, generation)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    def _wait(self, seconds: float, generation: int) -> None:
        """Sleep ``seconds``, or less when new params or a stop come."""
        deadline = time.monotonic() + seconds
        while not self._superseded(generation) and (remaining := deadline - time.monotonic()) > 0:
            if self._wake.wait(remaining):
                self._wake.clear()

    def _receive(self, wanted: AVInput, generation: int, audio_consumer: AudioConsumer | None) -> bool:
        """Open and decode until superseded or the input ends; True when frames came."""
        container = av.open(
            wanted.url,
            format=wanted.format,
            options=dict(wanted.options),
            timeout=(wanted.open_timeout_s, wanted.read_timeout_s),
        )
        try:
            if not container.streams.video:
                raise InputFault("no video stream")
            video = container.streams.video[0]
            audio = container.streams.audio[0] if audio_consumer is not None and container.streams.audio else None
            if audio_consumer is not None:
                audio_consumer.opened(audio)
            streams: list[av.stream.Stream] = [video] if audio is None else [video, audio]
            live = False
            for packet in container.demux(*streams):
                if self._superseded(generation):
                    return live
                try:
                    decoded = packet.decode()
                except av.error.InvalidDataError:
                    continue  # one damaged packet: the decoder resynchronises at the next key frame
                if packet.stream is audio:
                    for audio_frame in decoded:
                        audio_consumer(audio_frame)  # type: ignore[misc]  # audio is set only with a consumer
                    continue
                for frame in decoded:
                    assert isinstance(frame, av.VideoFrame)  # a packet of the video stream decodes to pictures
                    pts = frame.time if frame.time is not None else time.monotonic()
                    self._pacer.push(source_frame_from_av(frame), pts)
                    self.frames_decoded += 1
                    if not live:
                        live = True
                        self.connects += 1
                        self.error = None
                        self.condition = "live"
            return live
        except av.error.EOFError:
            return True
        except (av.error.FFmpegError, OSError):
            if self.condition == "live":
                return True  # the peer went quiet for read_timeout_s, or hung up: gone, reconnect
            raise
        finally:
            container.close()
