"""``sink::y4m``: YUV4MPEG2 (4:2:0, limited range) to a file, a FIFO or standard output.

A file or FIFO path is relative to the output directory
(``daemon.sandbox.resolve_output``); a FIFO must be one the operator made
there (``mkfifo <output_dir>/out.y4m``). ``"-"`` is the daemon's standard
output (``compositord run`` prints its own lines on standard error).

Opening a FIFO for writing blocks until a reader opens it, so the sink thread
probes with ``O_NONBLOCK`` (``ENXIO`` while nobody reads) until a reader comes
or the sink is closed; frames offered meanwhile are dropped and counted. Once
open, writes block on the sink thread only (the bounded queue protects the
render loop). A reader that goes away (``EPIPE``: CPython ignores SIGPIPE, so
the write raises) puts the node into its error state; send its params again to wait
for the next reader.
"""

from __future__ import annotations

import os
import select
import sys
import time

from compositord.daemon.engine.sinks import convert
from compositord.daemon.engine.sinks.base import Sink, SinkError, SinkFrame

STDOUT = "-"
STALLED_READER_TIMEOUT = 2.0  # seconds a closing sink waits for a reader that no longer reads


def y4m_header(width: int, height: int, fps: int, color_matrix: str) -> bytes:
    # C420jpeg: 4:2:0 with centred chroma; XCOLORRANGE: FFmpeg reads it, others ignore X fields.
    return f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg XCOLORRANGE=LIMITED\n".encode("ascii")


class Y4MSink(Sink):
    kind = "sink::y4m"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._fd: int | None = None
        self._owns_fd = False
        self._size: tuple[int, int] | None = None

    def where(self) -> str | None:
        path = str(self.params.get("path", STDOUT))
        return "standard output" if path == STDOUT else path

    def open(self, first: SinkFrame) -> None:
        path = str(self.params.get("path", STDOUT))
        if path == STDOUT:
            self._fd, self._owns_fd = sys.stdout.fileno(), False
        else:
            target = self.output_target(path)
            # O_NOFOLLOW: the real path has no link left; one swapped in since is refused, not followed.
            if target.is_fifo:
                flags = os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW
                fd = self.wait_for_reader(lambda: os.open(target.path, flags))
                if fd is None:
                    return  # closed before any reader came
                self._fd, self._owns_fd = fd, True  # stays non-blocking: see _write_all
            else:
                flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW
                self._fd = os.open(target.path, flags, 0o644)
                self._owns_fd = True
        frame = first.frame
        self._size = (frame.width, frame.height)
        self._write_all(y4m_header(frame.width, frame.height, max(1, int(first.fps)), frame.color_matrix))

    def write(self, item: SinkFrame) -> None:
        if self._fd is None:
            return
        frame = item.frame
        if (frame.width, frame.height) != self._size:
            raise SinkError(f"the output size changed to {frame.width}x{frame.height}; a Y4M stream has one size")
        self._write_all(b"FRAME\n" + convert.i420_bytes(frame))

    def _write_all(self, data: bytes) -> None:
        """Write everything; a FIFO whose reader stops reading is waited for in short steps, so that a
        closing sink gives up after ``STALLED_READER_TIMEOUT`` instead of hanging its thread."""
        view = memoryview(data)
        stalled_since: float | None = None
        while view:
            try:
                written = os.write(self._fd, view)
            except BrokenPipeError:
                raise SinkError("the reader went away (broken pipe)") from None
            except BlockingIOError:
                now = time.monotonic()
                stalled_since = stalled_since or now
                if self.closing and now - stalled_since > STALLED_READER_TIMEOUT:
                    raise SinkError(
                        f"the reader stopped reading for {STALLED_READER_TIMEOUT:g} s while the sink was closing"
                    ) from None
                select.select([], [self._fd], [], 0.1)
                continue
            stalled_since = None
            view = view[written:]

    def finish(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None and self._owns_fd:
            os.close(fd)
