"""A ``video::file`` node: a video file decoded with PyAV in its own thread, looped or once.

One decoder thread per node. It paces itself: each frame is handed over when
its presentation time comes, measured on ``time.monotonic()`` from the moment
playback (re)started, so a 30 fps file plays at 30 fps whatever the
compositor's rate. The handoff is a one-slot :class:`LatestFrameSlot`: the
render thread takes the newest frame without ever waiting, a frame it did not
take in time is replaced (and counted as dropped). Frames cross as I420
planes (1.5 bytes a pixel), tightly packed: PyAV's row padding (``line_size``)
is cut off here, on the decoder thread.

Params apply without restarting the pipeline: ``configure`` (render thread)
records what is wanted and wakes the decoder; a new ``path`` reopens the file,
a new ``seek_seconds`` seeks, ``loop`` is read at the end of the file.
``seek_seconds`` is the start position of playback and of every loop pass.
``path`` names a regular file inside the asset directory (``daemon.sandbox``).

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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from compositord.daemon.engine.render.frames import ColorMatrix, SourceFrame, chroma_size
from compositord.daemon.engine.sandbox import SandboxError, resolve_input
from compositord.daemon.engine.sources.handoff import LatestFrameSlot

log = logging.getLogger(__name__)
_serials = itertools.count(1)

OPEN_TIMEOUT_S = 5.0  # av.open and each read give up after this long (a path on a dead network mount)
REANCHOR_AFTER_S = 0.5  # a frame this late (slow decode) restarts the clock at it instead of rushing to catch up
DEFAULT_FRAME_RATE = 25.0  # for streams that name no rate and frames without timestamps
CLOSE_JOIN_S = 0.5  # how long close() waits for the decoder thread (it never blocks the caller longer)

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


class VideoFileSource:
    def __init__(self, params: Mapping[str, Any], asset_dir: str | os.PathLike[str] | None = None) -> None:
        self._asset_dir = Path(asset_dir) if asset_dir is not None else None
        self._slot: LatestFrameSlot[SourceFrame] = LatestFrameSlot()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._generation = 0  # +1 when path or seek_seconds change: the decoder starts over
        self._wanted: _Wanted | None = None
        self._frame: SourceFrame | None = None
        self.error: str | None = None  # written by the decoder thread, read by the render loop
        self.frames_decoded = 0
        self.configure(params)
        self._thread = threading.Thread(target=self._run, name=f"compositord-decode({self._current()[1].path})", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ render thread

    def configure(self, params: Mapping[str, Any]) -> None:
        if "path" not in params:
            raise ValueError("path: required for video::file")
        wanted = _Wanted(str(params["path"]), bool(params.get("loop", True)), float(params.get("seek_seconds", 0.0)))
        with self._lock:
            old = self._wanted
            failed = self.error is not None
            if old == wanted and not failed:
                return
            # The same params sent again while failing retry (the file may be there now).
            if failed or old is None or (old.path, old.seek_seconds) != (wanted.path, wanted.seek_seconds):
                self._generation += 1
            self._wanted = wanted
        self._wake.set()

    def frame(self, t: float = 0.0) -> SourceFrame | None:
        newest = self._slot.take()
        if newest is not None:
            self._frame = newest
        return self._frame

    def stats(self) -> dict[str, Any]:
        return {"frames_decoded": self.frames_decoded, "frames_dropped": self._slot.dropped}

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

    def _run(self) -> None:
        container: Any = None
        opened_path: str | None = None
        try:
            while not self._stop.is_set():
                generation, wanted = self._current()
                self._slot.clear()
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
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate or DEFAULT_FRAME_RATE)
        frame_period = 1.0 / rate if rate > 0 else 1.0 / DEFAULT_FRAME_RATE
        start = self._current()[1].seek_seconds
        clock: tuple[float, float] | None = None  # (monotonic, media seconds) that line up
        at_start = fresh  # a file just opened is at its start; any other is wherever the last playback left it
        while True:
            if start > 0 or not at_start:
                _seek(container, stream, start)
            at_start = False
            shown = 0
            media_time = start
            for frame in _decode(container, stream):
                if self._superseded(generation):
                    return
                media_time = frame.time if frame.time is not None else media_time + frame_period
                if media_time < start - frame_period / 2:
                    continue  # a seek lands on the key frame before the target; those frames are not shown
                if clock is None:
                    clock = (time.monotonic(), media_time)
                due = clock[0] + (media_time - clock[1])
                if not self._sleep_until(due, generation):
                    return
                if time.monotonic() - due > REANCHOR_AFTER_S:
                    clock = (time.monotonic(), media_time)
                self._slot.put(source_frame_from_av(frame))
                self.frames_decoded += 1
                shown += 1
                if self.error is not None:
                    self.error = None
            if shown == 0:
                where = f" at or after seek_seconds {start:g}" if start > 0 else ""
                raise InputFault(f"{self._current()[1].path}: no decodable video frames{where}")
            # The next pass continues the clock where this one ended, one frame later.
            if clock is not None:
                clock = (clock[0] + (media_time - clock[1]) + frame_period, start)
            while not self._current()[1].loop:
                if self._superseded(generation):
                    return
                self._wake.wait()
                self._wake.clear()
                clock = None  # looping switched on later: start the clock afresh
            if self._superseded(generation):
                return

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


def _decode(container: Any, stream: Any) -> Any:
    """Frames of one pass; a decode error after the start ends the pass like the end of the file would."""
    try:
        for packet in container.demux(stream):
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
