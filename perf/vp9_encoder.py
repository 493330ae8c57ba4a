"""VP9 into WebM in memory with PyAV, as the compositor_pipeline benchmark runs it (with an AAC track
into Matroska for compositor_pipeline_aac).

``Vp9Settings`` are the encoder options both sides use (the FFmpeg peer's command line is built from
them); ``Vp9Session`` writes one WebM (its sound, when the settings have ``audio``, through the
sinks' own ``AudioTrack``, fed the blocks handed over with the frames); ``EncoderThread`` runs sessions on a thread of their own, fed
through a bounded queue, so compositing (this thread) and encoding overlap. ``encode`` releases the
GIL for the libvpx work (PyAV's ``avcodec_send_frame`` / ``receive_packet`` run ``nogil``); only
the few Python lines around it need the GIL.
"""

from __future__ import annotations

import io
import queue
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

QUEUE_FRAMES = 4  # compositing may run this far ahead of the encoder


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
    container: str = "webm"
    audio: AudioSettings | None = None  # a sound track beside the video (compositor_pipeline_aac)

    @property
    def nv12_bytes(self) -> int:
        return self.width * self.height * 3 // 2


@dataclass(frozen=True)
class AudioSettings:
    """The sound track of compositor_pipeline_aac: FFmpeg's ``aac`` encoder on both sides."""

    codec: str = "aac"
    sample_rate: int = 48_000
    channels: int = 2
    bit_rate_kbps: int = 128
    tone_hz: float = 1000.0


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
        for plane, rows, cols in zip(
            frame.planes, (height, height // 2, height // 2), (width, width // 2, width // 2), strict=False
        )
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


class Vp9Session:
    """One WebM being written into memory: ``convert`` an NV12 frame, ``encode`` it, ``finish``."""

    def __init__(self, settings: Vp9Settings) -> None:
        import av

        self.settings = settings
        self.buffer = io.BytesIO()
        self.container = av.open(self.buffer, mode="w", format=settings.container)
        stream = self.container.add_stream("libvpx-vp9", rate=settings.fps)
        stream.width, stream.height, stream.pix_fmt = settings.width, settings.height, "yuv420p"
        stream.bit_rate = settings.bit_rate
        stream.codec_context.gop_size = settings.gop
        stream.codec_context.thread_count = settings.threads
        stream.options = dict(settings.options)
        self.stream = stream
        self.audio: Any = None
        if settings.audio is not None:
            from compositord.daemon.engine.audio.bus import AudioBlock, silence
            from compositord.daemon.engine.sinks.audio_track import AudioTrack

            sound = settings.audio
            empty = AudioBlock(silence(0, sound.channels), 0, sound.sample_rate)
            self.audio = AudioTrack(self.container, sound.codec, empty, 0.0, sound.bit_rate_kbps)
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

    def encode_audio(self, block: Any) -> None:
        self.audio.write(block)

    def finish(self) -> tuple[bytes, int]:
        self.encode(None)
        if self.audio is not None:
            self.audio.finish()
        self.container.close()
        return self.buffer.getvalue(), self.packets


class EncoderThread:
    """``begin()``, ``put(nv12)`` per frame (blocks when the encoder is QUEUE_FRAMES behind), ``finish()``
    returns the WebM's bytes; the thread outlives iterations. ``close()`` (or ``with``) stops it.

    A frame's place in the queue is given back only once the frame is converted, i.e. when the encoder
    thread is about to enter libvpx and let go of the GIL, not when it takes the frame: otherwise the
    producer wakes up at once, composites the next frame holding the GIL (moderngl keeps it through
    every call), and the conversion waits for it: 1.3-1.7 ms a frame where it needs 0.06-0.09
    (perf/README.md).
    """

    _BEGIN = object()
    _FINISH = object()
    _QUIT = object()

    def __init__(self, settings: Vp9Settings, queue_frames: int = QUEUE_FRAMES) -> None:
        self.settings = settings
        self.packets = 0
        self._places = threading.Semaphore(queue_frames)  # frames handed over and not yet converted
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_frames + 3)  # the frames, and begin/finish/quit
        self._results: queue.Queue[tuple[bytes, int] | BaseException] = queue.Queue(maxsize=1)
        self._thread = threading.Thread(target=self._main, name="bench-vp9-encoder", daemon=True)
        self._thread.start()

    def begin(self) -> None:
        self._queue.put(self._BEGIN)  # the session is made on the encoder thread, where libvpx runs

    def put(self, nv12: Any, audio: Any = None) -> None:
        """Hand over a frame (and, with audio settings, the ``AudioBlock`` that goes with it)."""
        nbytes = memoryview(nv12).nbytes
        if nbytes != self.settings.nv12_bytes:
            raise ValueError(
                f"nv12 frame: {nbytes} bytes, expected {self.settings.nv12_bytes} ({self.settings.width}x{self.settings.height})"
            )
        if not self._thread.is_alive():
            raise EncoderFailed("the encoder thread has stopped")
        self._places.acquire()
        self._queue.put((nv12, audio))

    def finish(self) -> bytes:
        """Flush the encoder and close the container; the WebM's bytes."""
        self._queue.put(self._FINISH)
        result = self._results.get()
        if isinstance(result, BaseException):
            raise EncoderFailed(f"encoding failed: {result!r}") from result
        webm, self.packets = result
        return webm

    def _main(self) -> None:
        session: Vp9Session | None = None
        error: BaseException | None = None  # the first failure since ``begin``, reported at ``finish``
        while True:
            message = self._queue.get()
            if message is self._QUIT:
                return
            try:
                if message is self._BEGIN:
                    session, error = None, None
                    session = Vp9Session(self.settings)
                elif message is self._FINISH:
                    if error is None:
                        assert session is not None, "finish before begin"
                        self._results.put(session.finish())
                    session = None
                else:
                    nv12, audio = message
                    frame = None
                    try:
                        if error is None:
                            assert session is not None, "a frame before begin"
                            frame = session.convert(nv12)
                    finally:
                        self._places.release()
                    if frame is not None:
                        assert session is not None
                        session.encode(frame)
                        if audio is not None:
                            session.encode_audio(audio)
            except BaseException as exc:
                error = error or exc
            if message is self._FINISH and error is not None:
                self._results.put(error)

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(self._QUIT)
            self._thread.join()

    def __enter__(self) -> EncoderThread:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
