"""Pushed audio inside an engine: the inlet of one ``audio::push`` node, between whoever hands the engine
PCM (the trio thread in thread mode, the socket reader in an engine process) and the node's AudioBuffer.

``PushedAudioInlet.put`` never blocks and never converts: it queues the
client's bytes (bounded: :data:`MAX_PENDING_BYTES`; past it a message is
dropped and counted). The inlet's own thread takes them in order and

1. places them in time by their ``pts_us`` (below),
2. converts them to the bus layout with NumPy (s16le / s32le scaled to
   [-1, 1], f32le clipped to it, NaN and infinities read as silence; mono
   copied to both channels at its level, not panned down 3 dB),
3. resamples them to 48 kHz with ``av.AudioResampler`` (one per node, kept
   from message to message so the filter runs on across them; remade when the
   client changes its rate),
4. writes them into the node's :class:`AudioBuffer`, which the mixer reads
   live on the render thread.

What ``pts_us`` does (the first sample's time on the client's clock):

- The inlet expects each message to start where the previous one ended
  (its ``pts_us`` plus its duration). Within :data:`PTS_TOLERANCE_US` of that
  it is contiguous (capture-clock jitter is not a gap), and the expectation
  runs on by sample count, not by the jittery stamps.
- Later than that (up to :data:`MAX_GAP_US`): the client skipped time
  (a lost message, silence suppression): the gap is filled with silence
  (``gaps``, ``gap_ms``).
- Earlier (up to :data:`MAX_GAP_US`): the head of the message was played
  already (a resent message): it is cut (``overlaps``), a message wholly in
  the past is dropped (``late_messages``).
- Further than :data:`MAX_GAP_US` either way: the client's clock restarted
  or it paused for long: the sound goes on from there (``discontinuities``).

Pushed audio is live: it plays when it arrives (plus ``latency_ms``), paced by
the output clock. ``pts_us`` is not matched against pushed video frames or the
render loop's clock; the buffer drops the oldest sound when more than
``latency_ms + 250 ms`` waits (the client's clock runs fast, or a burst) and
pads with silence when the client is late.

Jitter cushion: when a message arrives and the buffer is empty (the first
sound, or the mixer ran it dry), ``latency_ms`` of silence go first
(``primes``), so the next message has that long to arrive.
"""

from __future__ import annotations

import collections
import math
import threading
from typing import Any

import numpy as np

from compositord.daemon.engine.api import PushedAudio
from compositord.daemon.engine.audio.buffer import AudioBuffer
from compositord.daemon.engine.audio.bus import BUS_CHANNELS, BUS_DTYPE, BUS_SAMPLE_RATE

CAPACITY_S = 2.0
BACKLOG_MARGIN_S = 0.25  # beyond latency_ms: one whole message (at most 200 ms) and some room
MAX_PENDING_BYTES = 1024 * 1024  # client bytes waiting for the converter, per node
PTS_TOLERANCE_US = 5_000
MAX_GAP_US = 1_000_000
DEFAULT_LATENCY_MS = 50
LEVEL_FLOOR_DBFS = -120.0  # silence (-inf dBFS is not JSON)

_DTYPES: dict[str, np.dtype[Any]] = {"s16le": np.dtype("<i2"), "s32le": np.dtype("<i4"), "f32le": np.dtype("<f4")}
_SCALES = {"s16le": 1.0 / 32768.0, "s32le": 1.0 / 2147483648.0}


def to_bus_layout(data: bytes | memoryview, sample_format: str, channels: int) -> np.ndarray:
    """Interleaved PCM as a ``(samples, 2)`` float32 array in [-1, 1] (no rate change)."""
    raw = np.frombuffer(data, dtype=_DTYPES[sample_format]).reshape(-1, channels)
    if sample_format == "f32le":
        samples = np.clip(np.nan_to_num(raw, nan=0.0, posinf=0.0, neginf=0.0), -1.0, 1.0).astype(BUS_DTYPE)
    else:
        samples = (raw.astype(np.float64) * _SCALES[sample_format]).astype(BUS_DTYPE)
    if channels == 1:
        samples = np.repeat(samples, BUS_CHANNELS, axis=1)
    return samples


class RateConverter:
    """Bus-layout sound at ``rate`` to the bus rate; stateful (the filter runs on across chunks)."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._resampler: Any = None
        if rate != BUS_SAMPLE_RATE:
            import av  # the engine's media library, loaded by the thread that converts

            self._resampler = av.AudioResampler(format="flt", layout="stereo", rate=BUS_SAMPLE_RATE)

    def convert(self, samples: np.ndarray) -> np.ndarray:
        if self._resampler is None or samples.shape[0] == 0:
            return samples
        import av

        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples).reshape(1, -1), format="flt", layout="stereo")
        frame.sample_rate = self.rate
        return self._collect(self._resampler.resample(frame))

    def flush(self) -> np.ndarray:
        """What the filter still holds (its delay), at the end of this rate's sound."""
        if self._resampler is None:
            return np.zeros((0, BUS_CHANNELS), BUS_DTYPE)
        return self._collect(self._resampler.resample(None))

    @staticmethod
    def _collect(frames: list[Any]) -> np.ndarray:
        parts = [frame.to_ndarray().reshape(-1, BUS_CHANNELS) for frame in frames]
        return np.concatenate(parts) if parts else np.zeros((0, BUS_CHANNELS), BUS_DTYPE)


def _dbfs(value: float) -> float:
    return round(max(LEVEL_FLOOR_DBFS, 20.0 * math.log10(value)), 2) if value > 0 else LEVEL_FLOOR_DBFS


class PushedAudioInlet:
    """One ``audio::push`` node's queue, converter thread and buffer. ``put`` from any thread; ``buffer``,
    ``configure`` and ``stats`` from the render thread; ``close`` from either."""

    def __init__(self, node_id: str, *, latency_ms: int = DEFAULT_LATENCY_MS, max_pending_bytes: int = MAX_PENDING_BYTES) -> None:
        self.node_id = node_id
        self._max_pending = max_pending_bytes
        self._lock = threading.Condition()
        self._pending: collections.deque[PushedAudio] = collections.deque()
        self._pending_bytes = 0
        self._closed = False
        self._latency_ms = latency_ms
        self._buffer = self._new_buffer(latency_ms)
        self._thread: threading.Thread | None = None
        # Converter thread only.
        self._converter: RateConverter | None = None
        self._expected_us: float | None = None
        # Counters (written by the converter thread, read by stats(); ints and floats, so a torn read is impossible).
        self.messages_received = 0
        self.messages_dropped = 0  # the queue was full
        self.samples_received = 0
        self.bus_samples = 0  # converted sound written (silence not counted)
        self.gaps = 0
        self.gap_ms = 0.0
        self.overlaps = 0
        self.late_messages = 0
        self.discontinuities = 0
        self.primes = 0
        self._peak = np.zeros(BUS_CHANNELS)
        self._energy = np.zeros(BUS_CHANNELS)
        self._level_samples = 0
        self.input_format: dict[str, Any] | None = None

    @staticmethod
    def _new_buffer(latency_ms: int) -> AudioBuffer:
        return AudioBuffer(CAPACITY_S, max_backlog_s=latency_ms / 1000 + BACKLOG_MARGIN_S)

    @property
    def buffer(self) -> AudioBuffer:
        return self._buffer

    def configure(self, latency_ms: int) -> None:
        """A new latency takes a new buffer (its backlog bound is fixed): the sound waiting in the old one goes."""
        with self._lock:
            if latency_ms != self._latency_ms:
                self._latency_ms = latency_ms
                self._buffer = self._new_buffer(latency_ms)

    # ------------------------------------------------------------------ producers (any thread)

    def put(self, audio: PushedAudio) -> bool:
        """Queue one checked message (its bytes are copied); False when it was dropped (queue full or closed)."""
        size = len(audio.data)
        with self._lock:
            if self._closed or self._pending_bytes + size > self._max_pending:
                self.messages_dropped += 1
                return False
            if isinstance(audio.data, memoryview):
                audio = PushedAudio(
                    audio.node_id, audio.sample_format, audio.channels, audio.sample_rate, audio.pts_us, bytes(audio.data)
                )
            self._pending.append(audio)
            self._pending_bytes += size
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"compositord-audio-push({self.node_id})", daemon=True)
                self._thread.start()
            self._lock.notify()
        return True

    def close(self, timeout: float | None = None) -> None:
        """Stop the converter (what waits is dropped); wait up to ``timeout`` for it when given."""
        with self._lock:
            self._closed = True
            self._pending.clear()
            self._pending_bytes = 0
            self._lock.notify()
            thread = self._thread
        if timeout is not None and thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # ------------------------------------------------------------------ the converter thread

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._closed:
                    self._lock.wait()
                if self._closed:
                    return
                audio = self._pending.popleft()
                self._pending_bytes -= len(audio.data)
                buffer = self._buffer
            self._convert(audio, buffer)

    def _convert(self, audio: PushedAudio, buffer: AudioBuffer) -> None:
        samples = to_bus_layout(audio.data, audio.sample_format, audio.channels)
        try:
            self._place(audio, samples, buffer)
        finally:
            # Counted once handled, so a reader that sees the count also sees the sound in the buffer.
            self.messages_received += 1
            self.samples_received += samples.shape[0]
            self.input_format = {
                "sample_format": audio.sample_format,
                "channels": audio.channels,
                "sample_rate": audio.sample_rate,
            }

    def _place(self, audio: PushedAudio, samples: np.ndarray, buffer: AudioBuffer) -> None:
        count = samples.shape[0]
        rate = audio.sample_rate
        out: list[np.ndarray] = []
        if self._converter is None or self._converter.rate != rate:
            if self._converter is not None:
                out.append(self._converter.flush())
            self._converter = RateConverter(rate)
        lead = 0  # silence to play first (a gap), in samples at `rate`
        duration_us = count * 1_000_000 / rate
        expected = self._expected_us
        offset = audio.pts_us - expected if expected is not None else 0.0
        if expected is None or abs(offset) > MAX_GAP_US:
            if expected is not None:
                self.discontinuities += 1
            self._expected_us = audio.pts_us + duration_us
        elif offset > PTS_TOLERANCE_US:
            self.gaps += 1
            self.gap_ms += offset / 1000
            lead = round(offset * rate / 1_000_000)
            self._expected_us = audio.pts_us + duration_us
        elif offset < -PTS_TOLERANCE_US:
            played = round(-offset * rate / 1_000_000)
            if played >= count:
                self.late_messages += 1
                return
            self.overlaps += 1
            samples = samples[played:]
            self._expected_us = audio.pts_us + duration_us
        else:
            self._expected_us = expected + duration_us
        if lead:
            out.append(self._converter.convert(np.zeros((lead, BUS_CHANNELS), BUS_DTYPE)))
        out.append(self._converter.convert(samples))
        converted = np.concatenate(out) if len(out) > 1 else out[0]
        self._measure(samples)
        if converted.shape[0] == 0:
            return
        if buffer.buffered_s == 0 and self._latency_ms > 0:
            self.primes += 1
            buffer.write(np.zeros((round(self._latency_ms * BUS_SAMPLE_RATE / 1000), BUS_CHANNELS), BUS_DTYPE))
        buffer.write(converted)
        self.bus_samples += converted.shape[0]

    def _measure(self, samples: np.ndarray) -> None:
        if samples.shape[0] == 0:
            return
        wide = samples.astype(np.float64)
        with self._lock:
            self._peak = np.maximum(self._peak, np.abs(wide).max(axis=0))
            self._energy = self._energy + np.square(wide).sum(axis=0)
            self._level_samples += samples.shape[0]

    # ------------------------------------------------------------------ render thread

    def stats(self) -> dict[str, Any]:
        """Counters, the buffer's, and the level of what arrived since the previous call."""
        with self._lock:
            peak, energy, counted = self._peak, self._energy, self._level_samples
            self._peak, self._energy, self._level_samples = np.zeros(BUS_CHANNELS), np.zeros(BUS_CHANNELS), 0
            pending = self._pending_bytes
        rms = np.sqrt(energy / counted) if counted else np.zeros(BUS_CHANNELS)
        return {
            "messages_received": self.messages_received,
            "messages_dropped": self.messages_dropped,
            "samples_received": self.samples_received,
            "bus_samples": self.bus_samples,
            "pending_bytes": pending,
            "input": self.input_format,
            "gaps": self.gaps,
            "gap_ms": round(self.gap_ms, 3),
            "overlaps": self.overlaps,
            "late_messages": self.late_messages,
            "discontinuities": self.discontinuities,
            "primes": self.primes,
            "level": {"peak_dbfs": [_dbfs(float(v)) for v in peak], "rms_dbfs": [_dbfs(float(v)) for v in rms]},
            "audio": self._buffer.stats(),
        }
