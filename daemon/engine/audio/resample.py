"""Decoded sound to the bus format, on the thread that decoded it (never the render thread).

:class:`BusResampler` takes the ``av.AudioFrame``s a decoder hands out (any
sample format, rate and channel layout) and turns them into bus-format
chunks (``(samples, 2)`` float32 at 48 kHz) with ``av.AudioResampler``. Each
chunk is stamped with the stream time (seconds, the decoder's timeline) of
its first sample, counted from the first frame after a (re)start: the
resampler's output is one continuous run of samples, so counting them keeps
the stamps exact where the frames' own timestamps are rounded. A frame whose
timestamp is off that count by more than ``GAP_S`` (a gap, a seek, a new
segment) or whose format changes starts the count again.

Mono sound is put in both channels at its own level (FFmpeg's upmix would
lower it by 3 dB, a pan law meant for a centre speaker, not for a mono
microphone or a mono file); other layouts are downmixed by FFmpeg's rules.

The resampler's own delay (a few dozen samples at 48 kHz, well under a
millisecond) is not corrected: it is far below what sync needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import av
import numpy as np

from compositord.daemon.engine.audio.bus import BUS_CHANNELS, BUS_DTYPE, BUS_SAMPLE_RATE

GAP_S = 0.02  # a frame this far off the samples counted so far starts a new run


@dataclass(frozen=True)
class BusChunk:
    samples: np.ndarray  # (count, BUS_CHANNELS) float32 at BUS_SAMPLE_RATE
    time: float | None  # stream seconds of the first sample; None: the stream has no timestamps yet


class BusResampler:
    def __init__(self) -> None:
        self._resampler: Any = None
        self._input_shape: tuple[str, str, int] | None = None
        self._origin: float | None = None  # stream time of the first sample of this run
        self._samples_in = 0  # input samples since the origin (at the input rate)
        self._samples_out = 0  # bus samples handed out since the origin

    def reset(self) -> None:
        """Forget the run: the next frame starts afresh (a seek, a new pass, a reconnect)."""
        self._resampler = None
        self._input_shape = None
        self._origin = None
        self._samples_in = 0
        self._samples_out = 0

    def convert(self, frame: Any) -> list[BusChunk]:
        """The bus-format sound of one decoded ``av.AudioFrame`` (often one chunk, none while the resampler fills)."""
        shape = (frame.format.name, frame.layout.name, int(frame.sample_rate))
        time = frame.time
        if self._resampler is not None and (shape != self._input_shape or self._off_the_count(time, shape[2])):
            self.reset()
        if self._resampler is None:
            layout = "mono" if frame.layout.nb_channels == 1 else "stereo"
            self._resampler = av.AudioResampler(format="flt", layout=layout, rate=BUS_SAMPLE_RATE)
            self._input_shape = shape
            self._origin = time
        elif self._origin is None and time is not None:
            self._origin = time - self._samples_in / shape[2]
        self._samples_in += frame.samples
        chunks = []
        for converted in self._resampler.resample(frame):
            channels = converted.layout.nb_channels
            samples = np.asarray(converted.to_ndarray(), dtype=BUS_DTYPE).reshape(-1, channels)
            if channels == 1:
                samples = np.repeat(samples, BUS_CHANNELS, axis=1)
            if not samples.shape[0]:
                continue
            stamp = None if self._origin is None else self._origin + self._samples_out / BUS_SAMPLE_RATE
            self._samples_out += samples.shape[0]
            chunks.append(BusChunk(samples, stamp))
        return chunks

    def _off_the_count(self, time: float | None, rate: int) -> bool:
        if time is None or self._origin is None:
            return False
        return abs(time - (self._origin + self._samples_in / rate)) > GAP_S
