"""``sink::y4m``: YUV4MPEG2 (4:2:0, limited range) to a file or a FIFO.

A file or FIFO path is relative to the output directory, opened through
``daemon.sandbox.open_output_directory`` (the directory chain without
following links, the file with ``O_NOFOLLOW``: a link swapped in after the
check is refused, not followed); a FIFO must be one the operator made there
(``mkfifo <output_dir>/out.y4m``). ``"-"`` (standard output) is for one-shot
use only: the daemon's standard output is its log, so the daemon's sinks are
made without ``allow_stdout`` and refuse it (the params validation refuses
it first).

Opening a FIFO for writing blocks until a reader opens it, so the sink thread
probes with ``O_NONBLOCK`` (``ENXIO`` while nobody reads) until a reader comes
or the sink is closed; frames offered meanwhile are dropped and counted. Once
open, writes block on the sink thread only (the bounded queue protects the
render loop). A reader that goes away (``EPIPE``: CPython ignores SIGPIPE, so
the write raises) puts the node into its error state; send its params again to wait
for the next reader. A regular file stops with a node error before free
space on its disk falls under ``min_free_disk_bytes`` (``sinks/disk_floor.py``).

YUV4MPEG2 carries pictures only: a compositor's sound (``SinkFrame.audio``)
is not written. The stats say so (``audio``: ``"not recorded"`` once a frame
with sound came, and ``audio_blocks_ignored``), so an operator who expected
sound in the pipe learns why there is none; ``sink::file`` and
``sink::stream`` record it.
"""

from __future__ import annotations

import os
import select
import sys
import time
from typing import Any

from compositord.daemon.engine.sandbox import SandboxError, check_opened
from compositord.daemon.engine.sinks import convert
from compositord.daemon.engine.sinks.base import Sink, SinkError, SinkFrame
from compositord.daemon.engine.sinks.disk_floor import DiskFloor

STDOUT = "-"
STALLED_READER_TIMEOUT = 2.0  # seconds a closing sink waits for a reader that no longer reads
AUDIO_NOT_RECORDED = "not recorded: YUV4MPEG2 carries video only"


def y4m_header(width: int, height: int, fps: int, color_matrix: str) -> bytes:
    # C420jpeg: 4:2:0 with centred chroma; XCOLORRANGE: FFmpeg reads it, others ignore X fields.
    return f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg XCOLORRANGE=LIMITED\n".encode("ascii")


class Y4MSink(Sink):
    kind = "sink::y4m"

    def __init__(self, *args: Any, allow_stdout: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.allow_stdout = allow_stdout
        self._fd: int | None = None
        self._owns_fd = False
        self._size: tuple[int, int] | None = None
        self._floor: DiskFloor | None = None
        self.audio_blocks_ignored = 0

    def stats(self) -> dict[str, Any]:
        return {
            **super().stats(),
            "audio": AUDIO_NOT_RECORDED if self.audio_blocks_ignored else None,
            "audio_blocks_ignored": self.audio_blocks_ignored,
        }

    def where(self) -> str | None:
        path = self.params.get("path")
        return "standard output" if path == STDOUT else (str(path) if path else None)

    def open(self, first: SinkFrame) -> None:
        path = self.params.get("path")
        if not path:
            raise SinkError("no path: name a file or FIFO inside the output directory")
        if path == STDOUT:
            if not self.allow_stdout:
                raise SinkError(
                    'standard output ("-") is for one-shot use; the daemon writes to a file or FIFO in its output directory'
                )
            fd, owns_fd = sys.stdout.fileno(), False
        else:
            opened = self._open_output(str(path))
            if opened is None:
                return  # closed before any reader came
            fd, owns_fd = opened, True  # a FIFO stays non-blocking: see _write_all
        self._fd, self._owns_fd = fd, owns_fd
        frame = first.frame
        self._size = (frame.width, frame.height)
        self._write_all(fd, y4m_header(frame.width, frame.height, max(1, int(first.fps)), frame.color_matrix))

    def _open_output(self, path: str) -> int | None:
        with self.output_directory(path) as directory:
            if directory.target.is_fifo:
                fd = self.wait_for_reader(lambda: directory.open(os.O_WRONLY | os.O_NONBLOCK))
                if fd is None:
                    return None
            else:
                DiskFloor(directory.fd, self.min_free_disk_bytes).check_now()  # before a file is even created
                # Not truncated before the check below: a hard link swapped in since would be emptied.
                fd = directory.open(os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK, 0o644)
            try:
                if check_opened(fd, directory):
                    self._floor = None  # a FIFO fills no disk
                else:
                    os.ftruncate(fd, 0)
                    self._floor = DiskFloor(fd, self.min_free_disk_bytes)  # the directory's fd closes below
            except (SandboxError, OSError) as exc:
                os.close(fd)
                raise SinkError(str(exc)) from None
            return fd

    def write(self, item: SinkFrame) -> None:
        fd = self._fd
        if fd is None:
            return
        if item.audio is not None:
            self.audio_blocks_ignored += 1
        frame = item.frame
        if (frame.width, frame.height) != self._size:
            raise SinkError(f"the output size changed to {frame.width}x{frame.height}; a Y4M stream has one size")
        data = b"FRAME\n" + convert.i420_bytes(frame)
        self._write_all(fd, data)
        if self._floor is not None:
            self._floor.wrote(len(data))

    def _write_all(self, fd: int, data: bytes) -> None:
        """Write everything to ``fd``; a FIFO whose reader stops reading is waited for in short steps, so that a
        closing sink gives up after ``STALLED_READER_TIMEOUT`` instead of hanging its thread."""
        view = memoryview(data)
        stalled_since: float | None = None
        while view:
            try:
                written = os.write(fd, view)
            except BrokenPipeError:
                raise SinkError("the reader went away (broken pipe)") from None
            except BlockingIOError:
                now = time.monotonic()
                stalled_since = stalled_since or now
                if self.closing and now - stalled_since > STALLED_READER_TIMEOUT:
                    raise SinkError(
                        f"the reader stopped reading for {STALLED_READER_TIMEOUT:g} s while the sink was closing"
                    ) from None
                select.select([], [fd], [], 0.1)
                continue
            stalled_since = None
            view = view[written:]

    def finish(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None and self._owns_fd:
            os.close(fd)
