"""The part every sink shares: a bounded queue in front of a worker thread.

The render thread hands each composited frame to ``Sink.offer``, which never
blocks: when the queue is full the frame is dropped and counted (a slow
encoder, disk or receiver costs frames, never the render loop's pace). The
worker thread opens the output on the first frame, writes, and finishes
(flushes, closes) when the sink is closed. Any failure on the worker thread
puts the node into an error state: the message goes to ``ErrorLatch`` (which
reports it through the render loop's error channel), later frames are dropped
and counted, and the pipeline renders on. New params make a new sink instance
(its worker first waits for the old one to finish, so a file or FIFO is never
open twice); its first written frame clears the error.
"""

from __future__ import annotations

import errno
import os
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from compositord.daemon.config import DEFAULT_MIN_FREE_DISK_BYTES
from compositord.daemon.engine.audio.bus import AudioBlock
from compositord.daemon.engine.render.frames import OutputFrame
from compositord.daemon.engine.sandbox import OutputDirectory, SandboxError, open_output_directory

DEFAULT_QUEUE_CAPACITY = 8  # frames; at 30 fps about a quarter of a second of slack for an encoder


class SinkError(Exception):
    """A sink cannot go on; the message becomes the node's error (no traceback: it is for the user)."""


@dataclass(frozen=True)
class SinkFrame:
    """One composited frame on its way to a sink.

    ``media_time`` is the frame's slot on the render loop's clock (seconds:
    slot index / fps, summed over fps changes), so timestamps have no
    wall-clock jitter and a dropped slot leaves a gap of exactly its length.
    ``audio`` is the compositor's mixed sound since the previous frame it
    handed this pin's sinks (contiguous: a dropped slot's sound rides with the
    next frame), or None when the compositor mixes no sound.
    """

    frame: OutputFrame
    media_time: float
    fps: int
    audio: AudioBlock | None = None


class ErrorLatch:
    """A node's current error, reported once per change (any thread)."""

    def __init__(self, node_id: str, report: Callable[[str, str | None], None]) -> None:
        self.node_id = node_id
        self._report = report
        self._lock = threading.Lock()
        self._message: str | None = None

    @property
    def message(self) -> str | None:
        return self._message

    def set(self, message: str | None) -> None:
        with self._lock:
            if message == self._message:
                return
            self._message = message
        self._report(self.node_id, message)


def describe(exc: BaseException) -> str:
    """A one-line reason for a node error."""
    if isinstance(exc, SinkError):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


class Sink:
    """Base of every sink kind. Subclasses implement ``open``, ``write`` and ``finish``
    (all three run on the worker thread only)."""

    kind = "sink"
    queue_capacity = DEFAULT_QUEUE_CAPACITY
    # True: a frame counts as written when ``write`` returns (and the first one clears the node's error).
    # False: the subclass counts itself (a sink whose frames are written by a helper process).
    counts_writes = True
    # False: a full queue refuses the new frame (encoders keep a continuous run of frames);
    # True: the new frame replaces the oldest (previews and windows want the latest only).
    keep_latest = False

    def __init__(
        self,
        node_id: str,
        params: Mapping[str, Any],
        latch: ErrorLatch,
        predecessor: Sink | None = None,
        *,
        output_dir: str | os.PathLike[str] | None = None,
        min_free_disk_bytes: int | None = None,
    ) -> None:
        self.node_id = node_id
        self.output_dir = output_dir  # sinks that write files resolve their path inside it (daemon.sandbox)
        # Sinks that write files stop before free space there falls under this (sinks/disk_floor.py).
        self.min_free_disk_bytes = DEFAULT_MIN_FREE_DISK_BYTES if min_free_disk_bytes is None else min_free_disk_bytes
        self.params = dict(params)
        self._latch = latch
        self._predecessor = predecessor
        self._queue: deque[SinkFrame] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._opened = False
        self._failed = False
        self.frames_offered = 0
        self.frames_written = 0
        self.frames_dropped = 0

    # ------------------------------------------------------------------ render thread side

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name=f"compositord-{self.kind}({self.node_id})", daemon=True)
        self._thread.start()

    def offer(self, item: SinkFrame) -> bool:
        """Queue a frame for the worker; False (dropped, counted) when the queue is full or the sink failed."""
        with self._cond:
            self.frames_offered += 1
            if self._closing or self._failed:
                self.frames_dropped += 1
                return False
            if len(self._queue) >= self.queue_capacity:
                self.frames_dropped += 1
                if not self.keep_latest:
                    return False
                self._queue.popleft()
            self._queue.append(item)
            self._cond.notify()
            return True

    def close(self, wait: bool = False, timeout: float = 5.0) -> bool:
        """Ask the worker to write what is queued, then finish. With ``wait``: join it (True when it ended)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        thread = self._thread
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            return not thread.is_alive()
        return thread is None or not thread.is_alive()

    @property
    def closing(self) -> bool:
        return self._closing

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def stats(self) -> dict[str, Any]:
        with self._cond:
            queued = len(self._queue)
        return {
            "frames_offered": self.frames_offered,
            "frames_written": self.frames_written,
            "frames_dropped": self.frames_dropped,
            "queue_depth": queued,
            "queue_capacity": self.queue_capacity,
            "state": "error" if self._failed else ("running" if self._opened else "starting"),
        }

    # ------------------------------------------------------------------ worker thread

    def _take(self) -> SinkFrame | None:
        with self._cond:
            while not self._queue and not self._closing:
                self._cond.wait()
            return self._queue.popleft() if self._queue else None

    def _main(self) -> None:
        if self._predecessor is not None:
            self._predecessor.join()  # the old instance finishes (closes its file) before this one opens
            self._predecessor = None
        try:
            while True:
                item = self._take()
                if item is None:
                    break
                try:
                    if not self._opened:
                        self.open(item)
                        self._opened = True
                    self.write(item)
                except Exception as exc:
                    self._fail(exc)
                    break
                if self.counts_writes:
                    self.frames_written += 1
                    if self.frames_written == 1:
                        self._latch.set(None)
        finally:
            self._finish_quietly()

    def _fail(self, exc: BaseException) -> None:
        with self._cond:
            self._failed = True
            self.frames_dropped += len(self._queue)
            self._queue.clear()
        message = describe(exc)
        where = self.where()
        if where and where not in message:
            message = f"{where}: {message}"
        self._latch.set(f"{self.kind}: {message}")

    def _finish_quietly(self) -> None:
        try:
            self.finish()
        except Exception as exc:
            if not self._failed:
                self._fail(exc)

    def sleep_unless_closed(self, seconds: float) -> bool:
        """Wait on the worker thread; False as soon as the sink is closed."""
        deadline = time.monotonic() + seconds
        with self._cond:
            while not self._closing:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return True
                self._cond.wait(remaining)
        return False

    def wait_for_reader(self, probe: Callable[[], Any], interval: float = 0.05) -> Any:
        """Retry ``probe`` (which raises ``BlockingIOError``-like ``OSError`` while nobody listens)
        until it succeeds or the sink is closed; returns its result or None when closed."""
        while True:
            try:
                return probe()
            except OSError as exc:
                if not _is_no_reader(exc):
                    raise
            with self._cond:
                if self._closing:
                    return None
                self._cond.wait(interval)

    # ------------------------------------------------------------------ subclass hooks (worker thread)

    def output_directory(self, path: str) -> OutputDirectory:
        """The directory ``path`` (relative to the output directory) goes into, checked and opened without
        following links (``daemon.sandbox.open_output_directory``); a SinkError when it is not allowed.
        Open the output through it, then close it."""
        try:
            return open_output_directory(self.output_dir, path)
        except SandboxError as exc:
            raise SinkError(str(exc)) from None

    def where(self) -> str | None:
        """What the sink writes to, as error messages name it (no secrets: a stream URL's key stays out)."""
        return None

    def open(self, first: SinkFrame) -> None:
        raise NotImplementedError

    def write(self, item: SinkFrame) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """Flush and close whatever ``open`` made (also after a failure: best effort)."""


def _is_no_reader(exc: OSError) -> bool:
    return exc.errno in (errno.ENXIO, errno.EAGAIN)
