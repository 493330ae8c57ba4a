"""``audio::tone``: a sine for line-up and sync tests, continuous or in bursts; sound only (no picture).

The tone is made on the render thread, a frame's block at a time, when the
render loop reads its sound (``produce_audio``, called by
``audio.frame_audio.FrameAudio`` just before it reads ``audio``): a few
thousand samples of a sine cost microseconds, so it needs no thread of its
own, and it is sample-exact on the loop's clock by construction.

Sample ``k`` of the loop's clock (the clock output frames' ``media_time``
counts, at the bus rate) is ``A * sin(2 pi f k / 48000)`` with ``A`` =
``10 ** (level_dbfs / 20)``: the phase runs on from block to block, and a
change of frequency goes on from the phase reached (no click). With bursts,
the tone sounds only while ``k mod P < B``, ``P`` = ``burst_every_s`` and
``B`` = ``burst_ms`` in samples, so burst ``n`` starts exactly at sample
``n * P``: a sync test knows where to look.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from compositord.daemon.engine.audio.buffer import AudioBuffer
from compositord.daemon.engine.audio.bus import BUS_CHANNELS, BUS_DTYPE, BUS_SAMPLE_RATE

# A frame's block at 1 fps, with room: one block is written and read back at once, so little is ever held.
BUFFER_CAPACITY_S = 2.0


class ToneSource:
    def __init__(self, params: Mapping[str, Any]) -> None:
        self.audio = AudioBuffer(BUFFER_CAPACITY_S, max_backlog_s=0.0)
        self._next: int | None = None  # the sample the last block ended at
        self._phase = 0.0  # in cycles, at sample _next
        self.configure(params)

    def configure(self, params: Mapping[str, Any]) -> None:
        self.frequency_hz = float(params["frequency_hz"])
        self.amplitude = 10.0 ** (float(params["level_dbfs"]) / 20.0)
        every_s = float(params["burst_every_s"])
        self.burst_period = round(every_s * BUS_SAMPLE_RATE) if every_s > 0 else 0
        self.burst_length = round(float(params["burst_ms"]) * BUS_SAMPLE_RATE / 1000)

    def frame(self, t: float = 0.0) -> None:
        return None  # sound only: the layer draws nothing

    def samples(self, start: int, count: int) -> np.ndarray:
        """Bus-format samples ``[start, start + count)`` of the loop's clock (advances the phase)."""
        step = self.frequency_hz / BUS_SAMPLE_RATE  # cycles per sample
        if self._next != start:
            self._phase = math.fmod(start * step, 1.0)  # a first block, or a gap: the phase the clock says
        cycles = self._phase + step * np.arange(count, dtype=np.float64)
        mono = (self.amplitude * np.sin(2.0 * np.pi * cycles)).astype(BUS_DTYPE)
        if self.burst_period:
            positions = (start + np.arange(count, dtype=np.int64)) % self.burst_period
            mono[positions >= self.burst_length] = 0.0
        self._phase = math.fmod(self._phase + step * count, 1.0)
        self._next = start + count
        return np.repeat(mono[:, None], BUS_CHANNELS, axis=1)

    def produce_audio(self, start: int, count: int) -> None:
        self.audio.write(self.samples(start, count))

    def stats(self) -> dict[str, Any]:
        return {"audio": self.audio.stats()}
