"""``AudioBuffer``: the bounded buffer between a source's thread (which writes bus-format sound into it)
and the mixer on the render thread (which reads one frame's worth at a time).

Two ways to read, matching the two kinds of source:

- **Live** (``read(count)``): a tone, pushed PCM, a network stream. Sound is
  played in the order it came, paced by the output clock. When the producer
  is late the read is padded with silence (``underrun_samples``); when it runs
  fast, so that more than ``max_backlog`` seconds wait, the oldest samples are
  dropped (``dropped_samples``): the producer's clock drifts against ours and
  latency must not grow without bound.
- **Timed** (``read(count, at=t)``): a file whose video is shown by its own
  timestamps. The writer stamps each chunk with the play-clock time of its
  first sample (the clock its video frames are picked with); the reader asks
  for sound starting at ``t``. The read cursor runs on by itself from block
  to block (frame-to-frame jitter must not click) and is moved to ``t`` only
  when it has drifted more than ``resync_s`` away (counted in ``resyncs``):
  samples before ``t`` are dropped, silence stands for what has not arrived.

Capacity is fixed at construction (``capacity_s`` of bus-format sound); a
write that would exceed it drops the oldest samples, so a producer can never
make the buffer grow. Every method is thread-safe.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from compositord.daemon.engine.audio.bus import BUS_CHANNELS, BUS_DTYPE, BUS_SAMPLE_RATE, silence

DEFAULT_CAPACITY_S = 2.0
DEFAULT_MAX_BACKLOG_S = 0.2
DEFAULT_RESYNC_S = 0.02  # under one video frame at 50 fps: sync is held within a frame


class AudioBuffer:
    def __init__(
        self,
        capacity_s: float = DEFAULT_CAPACITY_S,
        *,
        max_backlog_s: float = DEFAULT_MAX_BACKLOG_S,
        resync_s: float = DEFAULT_RESYNC_S,
        sample_rate: int = BUS_SAMPLE_RATE,
        channels: int = BUS_CHANNELS,
    ) -> None:
        self.sample_rate = sample_rate
        self.channels = channels
        self._capacity = max(1, round(capacity_s * sample_rate))
        self._max_backlog = round(max_backlog_s * sample_rate)
        self._resync = round(resync_s * sample_rate)
        self._ring = np.zeros((self._capacity, channels), dtype=BUS_DTYPE)
        self._lock = threading.Lock()
        self._start = 0  # ring index of the oldest buffered sample
        self._size = 0
        self._first_time: float | None = None  # play-clock time of the oldest buffered sample (timed writes)
        self._cursor: float | None = None  # play-clock time the next timed read starts at
        self.written_samples = 0
        self.underrun_samples = 0
        self.dropped_samples = 0
        self.resyncs = 0

    # ------------------------------------------------------------------ producer side

    def write(self, samples: np.ndarray, at: float | None = None) -> None:
        """Append ``(n, channels)`` bus-format samples; ``at``: play-clock time of the first one (timed sources).

        A timed chunk that does not follow on from what is buffered (a seek, a loop, a gap in the
        stream) starts the buffer afresh at ``at``.
        """
        if samples.ndim != 2 or samples.shape[1] != self.channels:
            raise ValueError(f"audio must be (samples, {self.channels}) in the bus layout, not {samples.shape}")
        samples = np.asarray(samples, dtype=BUS_DTYPE)
        with self._lock:
            if at is not None:
                expected = None if self._first_time is None else self._first_time + self._size / self.sample_rate
                if expected is None or self._size == 0 or abs(at - expected) * self.sample_rate > max(1, self._resync):
                    self.dropped_samples += self._size
                    self._start, self._size, self._first_time = 0, 0, at
            count = samples.shape[0]
            self.written_samples += count
            overflow = self._size + count - self._capacity
            if overflow > 0:
                # The oldest sound goes first: what is buffered, then the head of this chunk.
                from_buffer = min(overflow, self._size)
                self._discard(from_buffer)
                from_chunk = overflow - from_buffer
                if from_chunk:
                    samples = samples[from_chunk:]
                    count -= from_chunk
                    if self._first_time is not None:
                        self._first_time += from_chunk / self.sample_rate
                self.dropped_samples += overflow
            end = (self._start + self._size) % self._capacity
            first = min(count, self._capacity - end)
            self._ring[end : end + first] = samples[:first]
            self._ring[: count - first] = samples[first:]
            self._size += count

    def clear(self) -> None:
        """Forget what is buffered (the source was reconfigured or restarted)."""
        with self._lock:
            self._start, self._size, self._first_time, self._cursor = 0, 0, None, None

    # ------------------------------------------------------------------ mixer side

    def read(self, count: int, at: float | None = None) -> np.ndarray:
        """``count`` samples, padded with silence when too few are buffered (see the module doc for ``at``)."""
        with self._lock:
            if at is not None:
                return self._read_timed(count, at)
            if self._size > count + self._max_backlog:
                excess = self._size - count - self._max_backlog
                self._discard(excess)
                self.dropped_samples += excess
            return self._take(count)

    @property
    def buffered_s(self) -> float:
        with self._lock:
            return self._size / self.sample_rate

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "buffered_ms": round(1000 * self._size / self.sample_rate, 1),
                "written_samples": self.written_samples,
                "underrun_samples": self.underrun_samples,
                "dropped_samples": self.dropped_samples,
                "resyncs": self.resyncs,
            }

    # ------------------------------------------------------------------ under the lock

    def _read_timed(self, count: int, at: float) -> np.ndarray:
        if self._cursor is None or abs(self._cursor - at) * self.sample_rate > self._resync:
            if self._cursor is not None:
                self.resyncs += 1
            self._cursor = at
        start_time = self._cursor
        self._cursor = start_time + count / self.sample_rate
        if self._first_time is None or self._size == 0:
            self.underrun_samples += count
            return silence(count, self.channels)
        # Drop what is older than the cursor; lead with silence when the buffer starts after it.
        offset = round((start_time - self._first_time) * self.sample_rate)
        if offset > 0:
            dropped = min(offset, self._size)
            self._discard(dropped)
            self.dropped_samples += dropped
            offset = 0
        lead = min(count, -offset)
        out = silence(count, self.channels)
        taken = self._take(count - lead, pad=False)
        out[lead : lead + taken.shape[0]] = taken
        self.underrun_samples += count - taken.shape[0]
        return out

    def _take(self, count: int, *, pad: bool = True) -> np.ndarray:
        available = min(count, self._size)
        first = min(available, self._capacity - self._start)
        out = silence(count if pad else available, self.channels)
        out[:first] = self._ring[self._start : self._start + first]
        out[first:available] = self._ring[: available - first]
        self._discard(available)
        if pad:
            self.underrun_samples += count - available
        return out

    def _discard(self, count: int) -> None:
        self._start = (self._start + count) % self._capacity
        self._size -= count
        if self._first_time is not None:
            self._first_time += count / self.sample_rate
        if self._size == 0:
            self._start = 0
