"""A ``video::file`` node: a video file decoded with PyAV in its own thread, looped or once, with its sound.

One decoder thread per node. Each frame is due at its presentation time,
measured on ``time.monotonic()`` from the moment playback (re)started, so a
30 fps file plays at 30 fps whatever the compositor's rate. That clock, the
*play clock* (``time.monotonic()`` seconds: when a frame or a sample is
due), runs on across loop passes: the next pass starts where the last one
ended, one frame after its last picture or at the end of its sound,
whichever is later. The decoder runs a little ahead of the clock and queues
each frame with its due time (a ``DueFrameQueue`` of at most
``MAX_PENDING_FRAMES``); the render thread takes the newest frame due
without ever waiting, so pictures change on the render tick however late
the decoder's thread wakes; a frame overtaken before it was taken is
counted as dropped. Frames cross as I420 planes (1.5 bytes a pixel), tightly
packed: PyAV's row padding (``line_size``) is cut off here, on the decoder
thread.

Params apply without restarting the pipeline: ``configure`` (render thread)
records what is wanted and wakes the decoder; a new ``path`` reopens the file,
a new ``seek_seconds`` seeks, ``loop`` is read at the end of the file.
``seek_seconds`` is the start position of playback and of every loop pass.
``path`` names a regular file inside the asset directory (``daemon.sandbox``).

Sound: the file's first audio stream is decoded on the same thread,
converted to the bus format there (``audio.resample``) and written into the
node's ``AudioBuffer`` (``audio``), each chunk stamped with the play-clock
time it is due at (``audio.timeline`` keeps loop passes seamless). So that
the mixer finds the sound written before it is due, the decoder runs
``AUDIO_LEAD_S`` ahead of the play clock when the file has sound
(``DECODE_AHEAD_S`` without), bounded by the queue: a file whose sound and
pictures lie far apart in it still shows its pictures on time, and sound
that comes too late is dropped by the buffer. Writing never waits: a full
buffer drops its oldest sound. ``audio_time(t)`` is the play-clock time of the
sound that goes with ``frame(t)``: the time the render loop asks, on the play
clock (``audio.timeline.PlayClock``). ``audio`` is None for a file without an audio stream (known once the
file is open, before its first picture is handed over; until then the sound
is announced, silent) and when the node's ``audio`` param is false; toggling
``audio`` does not restart playback.

Faults (a missing file, data PyAV cannot decode, no video stream, nothing at
or after ``seek_seconds``) put the node in the error state (``error``, polled
by the render loop); the node keeps showing its last good frame, if it had
one. The error clears once corrected params produce a frame; params sent
again unchanged while the node fails make it try again.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from compositord.daemon.engine.audio.buffer import DEFAULT_CAPACITY_S, AudioBuffer
from compositord.daemon.engine.audio.bus import BUS_SAMPLE_RATE
from compositord.daemon.engine.audio.resample import BusResampler
from compositord.daemon.engine.audio.timeline import PlayClock, SeamlessWriter
from compositord.daemon.engine.render.frames import ColorMatrix, SourceFrame, chroma_size
from compositord.daemon.engine.sandbox import SandboxError, resolve_input
from compositord.daemon.engine.sources.handoff import DueFrameQueue

log = logging.getLogger(__name__)
_serials = itertools.count(1)

OPEN_TIMEOUT_S = 5.0  # av.open and each read give up after this long (a path on a dead network mount)
REANCHOR_AFTER_S = 0.5  # a frame this late (slow decode) restarts the clock at it instead of rushing to catch up
DEFAULT_FRAME_RATE = 25.0  # for streams that name no rate and frames without timestamps
CLOSE_JOIN_S = 0.5  # how long close() waits for the decoder thread (it never blocks the caller longer)
AUDIO_LEAD_S = 0.2  # sound is decoded this far ahead of the picture shown (the mixer reads up to a frame ahead)
MAX_PENDING_FRAMES = 12  # decoded pictures queued at most (memory: 12 x 3 MB at 1080p)
DECODE_AHEAD_S = 0.05  # without sound, pictures are still queued this far ahead, so they change on the render tick
STARTUP_LEAD_S = 0.1  # with sound, the first picture is due this long after the file opens, so its sound is there too

# AVColorSpace values (libavutil/pixfmt.h) that say how the file's YUV is to be read.
_BT709 = {1}
_BT601 = {5, 6}  # BT470BG, SMPTE170M
_FULL_RANGE = 2  # AVCOL_RANGE_JPEG


class InputFault(Exception):
    """A fault of the input itself (not of this code): shown as the node's error."""


@dataclass(frozen=True)
class _Wanted:
    path: str
    loop: bool
    seek_seconds: float
    audio: bool


class VideoFileSource:
    def __init__(self, params: Mapping[str, Any], asset_dir: str | os.PathLike[str] | None = None) -> None:
        self._asset_dir = Path(asset_dir) if asset_dir is not None else None
        self._queue: DueFrameQueue[SourceFrame] = DueFrameQueue(MAX_PENDING_FRAMES)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._generation = 0  # +1 when path or seek_seconds change: the decoder starts over
        self._wanted: _Wanted | None = None
        self._frame: SourceFrame | None = None
        self.error: str | None = None  # written by the decoder thread, read by the render loop
        self.frames_decoded = 0
        self._sound = SeamlessWriter(AudioBuffer())
        # Whether the open file has an audio stream (decoder thread); None until the decoder has opened it:
        # the sound is announced meanwhile, so that an output whose first frame comes before the file is
        # open still has a track for it (an output has sound when its first frame has).
        self._file_has_audio: bool | None = None
        self.audio: AudioBuffer | None = None  # read by the mixer; set under self._lock
        self._play_clock = PlayClock()
        self.configure(params)
        self._thread = threading.Thread(target=self._run, name=f"compositord-decode({self._current()[1].path})", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ render thread

    def configure(self, params: Mapping[str, Any]) -> None:
        if "path" not in params:
            raise ValueError("path: required for video::file")
        wanted = _Wanted(
            str(params["path"]),
            bool(params.get("loop", True)),
            float(params.get("seek_seconds", 0.0)),
            bool(params.get("audio", True)),
        )
        with self._lock:
            old = self._wanted
            failed = self.error is not None
            if old == wanted and not failed:
                return
            # The same params sent again while failing retry (the file may be there now).
            if failed or old is None or (old.path, old.seek_seconds) != (wanted.path, wanted.seek_seconds):
                self._generation += 1
            if old is not None and (failed or old.path != wanted.path):
                self._file_has_audio = None  # another file (or this one again): not known until it is open
            self._wanted = wanted
            self._publish_audio()
        self._wake.set()

    def frame(self, t: float = 0.0) -> SourceFrame | None:
        newest = self._queue.take(time.monotonic())
        if newest is not None:
            self._frame = newest
        return self._frame

    def audio_time(self, t: float) -> float:
        """The play-clock time of the sound that goes with ``frame(t)`` (``audio.timeline.PlayClock``)."""
        return self._play_clock.audio_time(t)

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = {"frames_decoded": self.frames_decoded, "frames_dropped": self._queue.dropped}
        audio = self.audio
        if audio is not None:
            stats["audio"] = audio.stats()
        return stats

    def close(self, timeout: float = CLOSE_JOIN_S) -> None:
        """Stop the decoder thread (it closes its file); waits at most ``timeout``. Idempotent."""
        self._stop.set()
        self._wake.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def decoder_alive(self) -> bool:
        return self._thread.is_alive()

    # ------------------------------------------------------------------ decoder thread

    def _current(self) -> tuple[int, _Wanted]:
        with self._lock:
            assert self._wanted is not None
            return self._generation, self._wanted

    def _superseded(self, generation: int) -> bool:
        return self._stop.is_set() or self._current()[0] != generation

    def _publish_audio(self) -> None:
        """Under self._lock: ``audio`` is the buffer when the params want sound and the file has it, or is
        not open yet."""
        assert self._wanted is not None
        self.audio = self._sound.buffer if self._file_has_audio is not False and self._wanted.audio else None

    def _set_file_has_audio(self, has_audio: bool) -> None:
        with self._lock:
            self._file_has_audio = has_audio
            self._publish_audio()

    def _wants_audio(self) -> bool:
        with self._lock:
            return self.audio is not None

    def _run(self) -> None:
        container: Any = None
        opened_path: str | None = None
        try:
            while not self._stop.is_set():
                generation, wanted = self._current()
                self._queue.clear()
                self._sound.restart()
                self._sound.buffer.clear()
                try:
                    fresh = container is None or opened_path != wanted.path
                    if fresh:
                        if container is not None:
                            container.close()
                            container, opened_path = None, None
                        container = self._open(wanted.path)
                        opened_path = wanted.path
                    self._play(container, generation, fresh=fresh)
                except InputFault as fault:
                    self.error = str(fault)
                except (av.error.FFmpegError, OSError, ValueError) as exc:
                    self.error = f"{wanted.path}: {describe_av_error(exc)}"
                except Exception as exc:  # a bug here: the node says so instead of going quietly dark
                    log.exception("decoder of %s failed", wanted.path)
                    self.error = f"{wanted.path}: decoder failed: {type(exc).__name__}: {exc}"
                else:
                    continue  # superseded: start over with the new params
                if container is not None:
                    container.close()
                    container, opened_path = None, None
                self._set_file_has_audio(False)
                self._wait_for_change(generation)
        finally:
            if container is not None:
                container.close()

    def _open(self, path: str) -> Any:
        try:
            # The asset sandbox: a regular file inside the asset directory, never a FIFO or a device
            # (either could hold the decoder forever), never a link out.
            real = str(resolve_input(self._asset_dir, path, field="path"))
        except SandboxError as exc:
            raise InputFault(f"cannot open {exc}") from exc
        try:
            container = av.open(real, timeout=OPEN_TIMEOUT_S)
        except (av.error.FFmpegError, OSError) as exc:
            raise InputFault(f"cannot open {path}: {describe_av_error(exc)}") from exc
        if not container.streams.video:
            container.close()
            raise InputFault(f"{path}: no video stream")
        container.streams.video[0].thread_type = "AUTO"
        return container

    def _wait_for_change(self, generation: int) -> None:
        while not self._superseded(generation):
            self._wake.wait()
            self._wake.clear()

    def _play(self, container: Any, generation: int, *, fresh: bool) -> None:
        """Play passes of the file until params supersede them; raises InputFault when a pass shows nothing."""
        video = container.streams.video[0]
        sound = container.streams.audio[0] if container.streams.audio else None
        self._set_file_has_audio(sound is not None)
        streams = [video] if sound is None else [video, sound]
        rate = float(video.average_rate or video.guessed_rate or DEFAULT_FRAME_RATE)
        frame_period = 1.0 / rate if rate > 0 else 1.0 / DEFAULT_FRAME_RATE
        start = self._current()[1].seek_seconds
        resampler = BusResampler()
        clock: tuple[float, float] | None = None  # (monotonic, media seconds) that line up: the play clock's anchor
        at_start = fresh  # a file just opened is at its start; any other is wherever the last playback left it
        while True:
            if start > 0 or not at_start:
                _seek(container, video, start)
            at_start = False
            resampler.reset()
            playing = _Pass(
                start,
                frame_period,
                clock,
                sound=self._sound,
                wants_audio=self._wants_audio,
                sleep_until=lambda due: self._sleep_until(due, generation),
                show=self._show,
            )
            for frame in _decode(container, streams):
                if self._superseded(generation):
                    return
                if isinstance(frame, av.AudioFrame):
                    if self._wants_audio():
                        for chunk in resampler.convert(frame):
                            playing.sound(chunk.samples, chunk.time)
                    continue
                if not playing.picture(frame):
                    return
            if playing.shown == 0:
                where = f" at or after seek_seconds {start:g}" if start > 0 else ""
                raise InputFault(f"{self._current()[1].path}: no decodable video frames{where}")
            # The next pass continues the play clock where this one ended.
            clock = playing.next_anchor()
            while not self._current()[1].loop:
                if self._superseded(generation):
                    return
                self._wake.wait()
                self._wake.clear()
                clock = None  # looping switched on later: start the clock afresh
            if self._superseded(generation):
                return

    def _show(self, due: float, picture: SourceFrame) -> None:
        self._queue.put(due, picture)
        self.frames_decoded += 1
        if self.error is not None:
            self.error = None

    def _sleep_until(self, due: float, generation: int) -> bool:
        """Wait for ``due``; False as soon as new params or a stop supersede this playback."""
        while True:
            if self._superseded(generation):
                return False
            remaining = due - time.monotonic()
            if remaining <= 0:
                return True
            if self._wake.wait(remaining):
                self._wake.clear()


class _Pass:
    """One pass through the file on the decoder thread: pictures queued ahead with the time each is due,
    sound written ahead with the same stamps.

    The decoder runs ahead of the play clock by ``ahead_s()`` (``AUDIO_LEAD_S`` with sound, so the mixer
    finds it written before it is due; ``DECODE_AHEAD_S`` without): before it queues a picture due at
    ``d`` it waits until ``d - ahead_s()``. The render thread takes each picture when it is due
    (``DueFrameQueue``), so the pictures keep their times however late this thread wakes.
    """

    def __init__(
        self,
        start: float,
        frame_period: float,
        clock: tuple[float, float] | None,
        *,
        sound: SeamlessWriter,
        wants_audio: Callable[[], bool],
        sleep_until: Callable[[float], bool],
        show: Callable[[float, SourceFrame], None],
    ) -> None:
        self._writer = sound
        self._wants_audio = wants_audio
        self._sleep_until = sleep_until
        self._show = show
        self._start = start
        self._frame_period = frame_period
        self._clock = clock
        self._early_sound: deque[tuple[np.ndarray, float]] = deque()  # decoded before the clock is anchored
        self._early_samples = 0
        self._media_time = start  # of the newest picture
        self._sound_end: float | None = None
        self.shown = 0  # pictures queued to be shown

    def sound(self, samples: np.ndarray, media_time: float | None) -> None:
        if media_time is None:
            media_time = self._sound_end if self._sound_end is not None else self._media_time
        end = media_time + samples.shape[0] / BUS_SAMPLE_RATE
        if end <= self._start:
            return  # before the seek position
        self._sound_end = end if self._sound_end is None else max(self._sound_end, end)
        if self._clock is None:
            self._early_sound.append((samples, media_time))
            self._early_samples += samples.shape[0]
            while self._early_samples > self._writer.buffer.sample_rate * DEFAULT_CAPACITY_S:
                self._early_samples -= self._early_sound.popleft()[0].shape[0]
            return
        self._writer.write(samples, self._play_time(media_time))

    def picture(self, frame: Any) -> bool:
        """Take a decoded picture; False when new params or a stop superseded this playback."""
        media_time = frame.time if frame.time is not None else self._media_time + self._frame_period
        self._media_time = media_time
        if media_time < self._start - self._frame_period / 2:
            return True  # a seek lands on the key frame before the target; those frames are not shown
        if self._clock is None:
            lead = STARTUP_LEAD_S if self._wants_audio() else 0.0
            self._clock = (time.monotonic() + lead, media_time)
            while self._early_sound:
                samples, sound_time = self._early_sound.popleft()
                self._writer.write(samples, self._play_time(sound_time))
            self._early_samples = 0
        due = self._play_time(media_time)
        if not self._sleep_until(due - self._ahead_s()):
            return False
        if time.monotonic() - due > REANCHOR_AFTER_S:
            self._clock = (time.monotonic(), media_time)  # decoding fell behind: start the clock again from here
            due = self._play_time(media_time)
        self._show(due, source_frame_from_av(frame))
        self.shown += 1
        return True

    def next_anchor(self) -> tuple[float, float] | None:
        """The play clock's anchor for the next pass: it starts where this one ends."""
        if self._clock is None:
            return None
        # A whole number of frame periods: timestamps rounded by the container (Matroska keeps milliseconds,
        # 1.167 s for a last frame due at 1.1667) would otherwise lengthen every pass, and the pictures would
        # slide against the output's frame slots and skip a frame every few minutes.
        frames = max(1, round((self._media_time + self._frame_period - self._start) / self._frame_period))
        end = self._start + frames * self._frame_period
        if self._sound_end is not None and self._sound_end - end > self._frame_period:
            # Sound that really outlasts the pictures plays out before the next pass; a tail under a frame
            # (codec and resampler padding) is cut by the writer instead, for the same reason as above.
            end = self._sound_end
        return (self._play_time(end), self._start)

    def _ahead_s(self) -> float:
        ahead = AUDIO_LEAD_S if self._wants_audio() else DECODE_AHEAD_S
        return min(ahead, (MAX_PENDING_FRAMES - 2) * self._frame_period)  # never more than the queue holds

    def _play_time(self, media_time: float) -> float:
        assert self._clock is not None
        return self._clock[0] + (media_time - self._clock[1])


def _decode(container: Any, streams: list[Any]) -> Any:
    """Frames of one pass (pictures and sound, in file order); a decode error after the start ends the pass
    like the end of the file would."""
    try:
        for packet in container.demux(*streams):
            try:
                yield from packet.decode()
            except av.error.InvalidDataError:
                continue  # one damaged packet: the decoder resynchronises at the next key frame
    except av.error.EOFError:
        return


def _seek(container: Any, stream: Any, seconds: float) -> None:
    target = int(seconds / stream.time_base) if stream.time_base else 0
    if stream.start_time is not None:
        target += stream.start_time
    container.seek(target, stream=stream, backward=True, any_frame=False)


def describe_av_error(exc: BaseException) -> str:
    """FFmpeg's and the OS's own words, without the errno and the repeated file name."""
    strerror = getattr(exc, "strerror", None)
    if isinstance(strerror, str) and strerror:
        return strerror
    return str(exc) or type(exc).__name__


def _color_matrix(frame: Any) -> ColorMatrix:
    colorspace = getattr(frame, "colorspace", 2)
    if colorspace in _BT709:
        return "bt709"
    if colorspace in _BT601:
        return "bt601"
    return "bt709" if frame.height >= 720 else "bt601"  # FFmpeg's guess for untagged video


def source_frame_from_av(frame: Any) -> SourceFrame:
    """A decoded frame as a tightly packed I420 SourceFrame, limited range (what the renderer reads)."""
    name = frame.format.name
    matrix = _color_matrix(frame)
    full_range = name.startswith("yuvj") or getattr(frame, "color_range", 0) == _FULL_RANGE
    if frame.format.is_rgb:
        frame = frame.reformat(format="yuv420p", dst_colorspace="ITU709", dst_color_range="MPEG")
        matrix = "bt709"
    elif name != "yuv420p" or full_range:
        frame = frame.reformat(format="yuv420p", src_color_range="JPEG" if full_range else "MPEG", dst_color_range="MPEG")
    width, height = frame.width, frame.height
    chroma_w, chroma_h = chroma_size(width, height)
    packed = np.empty(width * height + 2 * chroma_w * chroma_h, dtype=np.uint8)
    offset = 0
    for plane, (plane_w, plane_h) in zip(
        frame.planes, ((width, height), (chroma_w, chroma_h), (chroma_w, chroma_h)), strict=True
    ):
        rows = np.frombuffer(plane, dtype=np.uint8, count=plane.line_size * plane_h).reshape(plane_h, plane.line_size)
        packed[offset : offset + plane_w * plane_h].reshape(plane_h, plane_w)[...] = rows[:, :plane_w]
        offset += plane_w * plane_h
    return SourceFrame("i420", width, height, packed, next(_serials), opaque=True, color_matrix=matrix)
