"""A compositor's mix in its output format: its sample rate (48000 or 44100) and channels (stereo or mono).

The mix is made in the bus format (48 kHz stereo) and converted once, here:

- mono is ``(left + right) / 2``, so a sound that is the same in both
  channels keeps its level;
- 44100 Hz goes through one ``av.AudioResampler`` (FFmpeg's swresample) kept
  for the compositor's whole life, so its filter state runs on from block to
  block (a resampler made per block would click at every frame).

Block lengths never drift: each output block covers the output samples from
the end of the previous block to ``round(bus_end * rate / 48000)``, computed
from absolute sample positions, and is taken from a FIFO of what the
resampler produced. The resampler holds back a few samples (its filter
delay, 16 at 48 kHz to 44.1 kHz) and hands out a sample more or less from
block to block, so the FIFO starts with :data:`PRIME_S` of silence: it then
never runs short, and the whole output is late by that constant (about a
millisecond and a half), far under a video frame.

Blocks stay joined when frames mixed nothing in between (a frame whose
picture failed before its sound was mixed, inputs without sound for a
moment): up to :data:`MAX_GAP_S` of missing sound is filled with silence.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

from compositord.daemon.engine.audio.bus import BUS_DTYPE, BUS_SAMPLE_RATE, AudioBlock

LAYOUT_CHANNELS = {"stereo": 2, "mono": 1}
_BUS_TIME_BASE = Fraction(1, BUS_SAMPLE_RATE)
PRIME_S = 0.0015  # silence the FIFO starts with: more than the resampler's delay plus its block-to-block wobble
MAX_GAP_S = 1.0  # frames that mixed nothing for up to this long are filled with silence; longer starts a new run
MAX_FIFO_S = 0.5  # more than this waiting means the resampler runs away: drop the excess (never seen; bounded anyway)


def downmix(samples: np.ndarray, layout: str) -> np.ndarray:
    """Bus-layout (stereo) ``samples`` in ``layout``."""
    if layout == "mono":
        return (samples.sum(axis=1, keepdims=True, dtype=BUS_DTYPE) * np.float32(0.5)).astype(BUS_DTYPE, copy=False)
    return samples


def output_position(bus_sample: int, rate: int) -> int:
    """The output sample at the time of bus sample ``bus_sample`` (rounded to the nearest)."""
    return (bus_sample * rate + BUS_SAMPLE_RATE // 2) // BUS_SAMPLE_RATE


class OutputFormat:
    """Converts one compositor's bus-format mix, block after block, to its output rate and layout."""

    def __init__(self, sample_rate: int, layout: str) -> None:
        if layout not in LAYOUT_CHANNELS:
            raise ValueError(f"channels must be one of {', '.join(LAYOUT_CHANNELS)}, not {layout!r}")
        self.sample_rate = sample_rate
        self.layout = layout
        self.channels = LAYOUT_CHANNELS[layout]
        self._resampler = None if sample_rate == BUS_SAMPLE_RATE else av.AudioResampler("flt", layout, sample_rate)
        self._fifo = np.zeros((round(PRIME_S * sample_rate), self.channels), dtype=BUS_DTYPE)
        self._end: int | None = None  # output position the next block starts at
        self._bus_end: int | None = None  # bus position the last block ended at
        self.padded_samples = 0  # samples made up as silence: a frame that mixed nothing, a short resampler (never, once primed)
        self.dropped_samples = 0

    def convert(self, mix: np.ndarray, bus_start: int) -> AudioBlock:
        """The output block of bus-format ``mix`` that starts at bus sample ``bus_start``."""
        gap = bus_start - self._bus_end if self._bus_end is not None else 0
        if 0 < gap <= MAX_GAP_S * BUS_SAMPLE_RATE:
            # A frame mixed nothing (its picture failed first, or no input had sound): silence keeps the blocks joined.
            mix = np.concatenate([np.zeros((gap, mix.shape[1]), dtype=BUS_DTYPE), mix])
            bus_start -= gap
            self.padded_samples += gap
        elif gap:
            self._end = None  # a long pause, or a clock that went back: a new run of blocks
        self._bus_end = bus_start + mix.shape[0]
        samples = downmix(mix, self.layout)
        if self._resampler is None:
            return AudioBlock(samples, bus_start, self.sample_rate)
        start = output_position(bus_start, self.sample_rate) if self._end is None else self._end
        end = output_position(bus_start + mix.shape[0], self.sample_rate)
        self._end = end
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples).reshape(1, -1), format="flt", layout=self.layout)
        frame.sample_rate = BUS_SAMPLE_RATE
        frame.time_base = _BUS_TIME_BASE
        frame.pts = bus_start
        produced = [out.to_ndarray().reshape(-1, self.channels) for out in self._resampler.resample(frame)]
        if produced:
            self._fifo = np.concatenate([self._fifo, *produced])
        count = max(0, end - start)
        if self._fifo.shape[0] < count:
            short = count - self._fifo.shape[0]
            self.padded_samples += short
            self._fifo = np.concatenate([np.zeros((short, self.channels), dtype=BUS_DTYPE), self._fifo])
        out, self._fifo = self._fifo[:count], self._fifo[count:]
        limit = round(MAX_FIFO_S * self.sample_rate)
        if self._fifo.shape[0] > limit:
            self.dropped_samples += self._fifo.shape[0] - limit
            self._fifo = self._fifo[-limit:]
        return AudioBlock(np.ascontiguousarray(out), start, self.sample_rate)
