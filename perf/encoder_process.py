"""VP9 into WebM in memory, in a worker process fed through a shared-memory ring.

Why a process and not a thread: moderngl never releases the GIL, so while
``Framebuffer.read`` waits for llvmpipe to finish a frame, an encoder
*thread* cannot run the few Python lines between two ``encode`` calls
(``encode`` itself releases it), and once the compositing thread holds the
GIL the encoder thread waits for the interpreter's switch interval (5 ms,
about a frame of VP9). A worker process has its own interpreter, so
compositing and encoding overlap fully.

The ring is bounded: ``RING_SLOTS`` frames in shared memory, each slot
handed back by the worker as soon as its pixels are copied into the encoder's
frame (before the encode), so compositing runs at most that many frames
ahead. Slot numbers and commands go over one ``multiprocessing`` pipe; the
finished WebM comes back as bytes (the output stays in memory).

The worker is started once (``spawn``: it never inherits the parent's GL
context or threads) and reused by every iteration; ``begin`` opens a fresh
container and encoder, as the thread version did per iteration.
"""

from __future__ import annotations

import io
import multiprocessing
import sys
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import numpy as np

RING_SLOTS = 4  # compositing may run this far ahead of the encoder
READY_TIMEOUT_S = 60.0  # spawning imports NumPy and PyAV: seconds on a loaded machine


@dataclass(frozen=True)
class Vp9Settings:
    """libvpx-vp9 as the FFmpeg peer runs it (perf/README.md, compositor_pipeline)."""

    width: int
    height: int
    fps: int = 30
    gop: int = 120
    bit_rate: int = 2_000_000
    threads: int = 2
    options: dict[str, str] = field(default_factory=lambda: {"deadline": "realtime", "cpu-used": "8", "row-mt": "1"})

    @property
    def nv12_bytes(self) -> int:
        return self.width * self.height * 3 // 2


class EncoderFailed(RuntimeError):
    pass


def nv12_to_yuv420p_frame(nv12: Any, width: int, height: int, frame: Any = None) -> Any:
    """A yuv420p ``av.VideoFrame`` filled from NV12 bytes (libvpx does not take NV12): the Y plane copied,
    CbCr split straight into the frame's U and V planes. Bit-identical to libswscale's conversion
    (tests/test_bench.py). The split reads each CbCr pair as one little-endian uint16 (Cb the low byte,
    Cr the high one): 0.025 ms against 0.13 ms for two strided byte copies, measured at 1280x720.
    ``frame``: a yuv420p frame of that size to fill instead of a new one (fresh planes cost page faults,
    about 0.1 ms a frame at 1280x720)."""
    import av

    luma_bytes = width * height
    if frame is None:
        frame = av.VideoFrame(width, height, "yuv420p")
    y_plane, u_plane, v_plane = (
        np.frombuffer(plane, np.uint8).reshape(rows, plane.line_size)[:, :cols]
        for plane, rows, cols in zip(frame.planes, (height, height // 2, height // 2), (width, width // 2, width // 2))
    )
    y_plane[...] = np.frombuffer(nv12, np.uint8, count=luma_bytes).reshape(height, width)
    if sys.byteorder == "little":
        pairs = np.frombuffer(nv12, np.uint16, count=luma_bytes // 4, offset=luma_bytes).reshape(height // 2, width // 2)
        u_plane[...] = pairs  # the cast keeps the low byte: Cb
        np.right_shift(pairs, 8, out=v_plane, casting="unsafe")  # the high byte: Cr
    else:
        chroma = np.frombuffer(nv12, np.uint8, count=luma_bytes // 2, offset=luma_bytes).reshape(height // 2, width // 2, 2)
        u_plane[...] = chroma[..., 0]
        v_plane[...] = chroma[..., 1]
    return frame


class _Session:
    """One WebM being written (between ``begin`` and ``finish``), in the worker."""

    def __init__(self, settings: Vp9Settings) -> None:
        import av

        self.settings = settings
        self.buffer = io.BytesIO()
        self.container = av.open(self.buffer, mode="w", format="webm")
        stream = self.container.add_stream("libvpx-vp9", rate=settings.fps)
        stream.width, stream.height, stream.pix_fmt = settings.width, settings.height, "yuv420p"
        stream.bit_rate = settings.bit_rate
        stream.codec_context.gop_size = settings.gop
        stream.codec_context.thread_count = settings.threads
        stream.options = dict(settings.options)
        self.stream = stream
        self.pts = 0
        self.packets = 0
        # Two frames filled in turn: libvpx copies a frame into its look-ahead queue during ``encode``, so
        # a frame is free again once ``encode`` returns (the decoded WebM is checked against the input).
        self._frames: list[Any] = [None, None]

    def convert(self, nv12: Any) -> Any:
        index = self.pts % len(self._frames)
        frame = self._frames[index] = nv12_to_yuv420p_frame(nv12, self.settings.width, self.settings.height, self._frames[index])
        return frame

    def encode(self, frame: Any) -> None:
        if frame is not None:
            frame.pts = self.pts
            self.pts += 1
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
            self.packets += 1

    def finish(self) -> tuple[bytes, int]:
        self.encode(None)
        self.container.close()
        return self.buffer.getvalue(), self.packets


def _worker_main(conn: Connection, shm_name: str, settings: Vp9Settings) -> None:
    import av  # noqa: F401  (imported before "ready", so that no timed iteration pays for it)

    shm = SharedMemory(name=shm_name)
    slot_bytes = settings.nv12_bytes
    session: _Session | None = None
    error: str | None = None  # the first failure since ``begin``, reported at ``finish``
    conn.send("ready")
    try:
        while True:
            message = conn.recv()
            if isinstance(message, int):
                frame = None
                if error is None:
                    try:
                        assert session is not None, "a frame before begin"
                        start = message * slot_bytes
                        frame = session.convert(shm.buf[start : start + slot_bytes])
                    except BaseException:
                        error = traceback.format_exc()
                conn.send(message)  # the slot is free again: its pixels are in ``frame`` now
                if frame is not None:
                    try:
                        assert session is not None
                        session.encode(frame)
                    except BaseException:
                        error = traceback.format_exc()
            elif message == "begin":
                error = None
                try:
                    session = _Session(settings)
                except BaseException:
                    session, error = None, traceback.format_exc()
            elif message == "finish":
                if error is None:
                    try:
                        assert session is not None, "finish before begin"
                        webm, packets = session.finish()
                        conn.send(("done", webm, packets))
                    except BaseException:
                        error = traceback.format_exc()
                if error is not None:
                    conn.send(("error", error))
                session = None
            elif message == "quit":
                return
    except EOFError:  # the parent went away
        return
    finally:
        shm.close()


class EncoderProcess:
    """The producer's side: ``begin()``, ``put(nv12)`` per frame (blocks when the ring is full), ``finish()``
    returns the WebM bytes. ``close()`` (or ``with``) stops the worker and frees the shared memory."""

    def __init__(self, settings: Vp9Settings, slots: int = RING_SLOTS) -> None:
        self.settings = settings
        self.slots = slots
        self.packets = 0
        self._shm = SharedMemory(create=True, size=settings.nv12_bytes * slots)
        self._next_slot = 0
        self._in_flight = 0
        context = multiprocessing.get_context("spawn")
        self._conn, child_conn = context.Pipe(duplex=True)
        self._process = context.Process(
            target=_worker_main, args=(child_conn, self._shm.name, settings), name="bench-vp9-encoder", daemon=True
        )
        try:
            self._process.start()
            child_conn.close()  # so that a dead worker reads as EOF here
            if not self._conn.poll(READY_TIMEOUT_S):
                raise EncoderFailed(f"the encoder process did not start within {READY_TIMEOUT_S:.0f} s")
            self._receive()  # "ready", or EncoderFailed when it died starting
        except BaseException:
            self.close()
            raise

    def begin(self) -> None:
        self.packets = 0
        self._conn.send("begin")

    def put(self, nv12: Any) -> None:
        """Copy one NV12 frame into the ring and hand it to the worker."""
        view = memoryview(nv12).cast("B")
        if view.nbytes != self.settings.nv12_bytes:
            raise ValueError(f"nv12 frame: {view.nbytes} bytes, expected {self.settings.nv12_bytes} ({self.settings.width}x{self.settings.height})")
        while self._in_flight >= self.slots:
            self._receive()
        start = self._next_slot * self.settings.nv12_bytes
        self._shm.buf[start : start + view.nbytes] = view
        self._conn.send(self._next_slot)
        self._next_slot = (self._next_slot + 1) % self.slots
        self._in_flight += 1

    def finish(self) -> bytes:
        """Flush the encoder and close the container; the WebM's bytes."""
        self._conn.send("finish")
        while True:
            message = self._receive()
            if isinstance(message, tuple):
                break
        if message[0] != "done":
            raise EncoderFailed(f"encoder process failed:\n{message[1]}")
        _, webm, self.packets = message
        return webm

    def _receive(self) -> Any:
        try:
            message = self._conn.recv()
        except EOFError:
            raise EncoderFailed(f"the encoder process exited (code {self._process.exitcode})") from None
        if isinstance(message, int):
            self._in_flight -= 1
        return message

    def close(self) -> None:
        if self._process.is_alive():
            try:
                self._conn.send("quit")
            except OSError:
                pass
            self._process.join(5.0)
            if self._process.is_alive():
                self._process.terminate()
                self._process.join()
        self._conn.close()
        self._shm.close()
        self._shm.unlink()

    def __enter__(self) -> EncoderProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
