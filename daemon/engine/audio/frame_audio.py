"""The render loop's audio clock, and each frame's one read of every input's sound.

Every output frame covers one block of bus samples: from where the previous
frame's block ended to ``samples_until(media_time + 1 / fps)``. Counting from
absolute positions on the loop's clock keeps the blocks contiguous and
drift-free through dropped slots (the next block is longer) and fps changes
(``media_time`` sums the slots of every fps segment). All compositors of a
loop render every frame, so they share the block.

A source's sound is read once per frame whoever asks (two compositors, or
two pins, fed by one source hear the same samples; reading its live buffer
twice would give each half of it), and only when a compositor with audio
asks: a source nobody mixes is not read.

A timed source's picture (a file's, a stream's) is shown at the first output
frame at or after it is due: late by up to one output period, half of one on
average, whatever the phase between the source's frames and the output's
slots. Its sound is read that half period late too (:data:`PICTURE_LAG_PERIODS`),
so picture and sound stay within half an output frame of each other as the
phase slides, instead of the sound running up to a whole frame early.

Reading never blocks: an ``AudioBuffer`` read takes its lock for a copy and
pads what has not arrived with silence, so a stalled input is silent and the
picture goes on.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from compositord.daemon.engine.audio.bus import BUS_SAMPLE_RATE, samples_until

PICTURE_LAG_PERIODS = 0.5  # how late, on average, an output frame shows a timed source's picture


class FrameAudio:
    """Render thread only."""

    def __init__(self) -> None:
        self.start = 0  # this frame's block: bus samples [start, end) of the loop's clock
        self.end = 0
        self._next: int | None = None
        self._media_time = 0.0
        self._frame_time = 0.0
        self._period = 0.0
        self._reads: dict[tuple[str, str], np.ndarray | None] = {}

    @property
    def count(self) -> int:
        return self.end - self.start

    def next_frame(self, media_time: float, period: float, frame_time: float) -> None:
        """Start a frame in slot ``media_time`` lasting ``period``; ``frame_time`` is the ``t`` sources' ``frame(t)`` get."""
        self.start = samples_until(media_time) if self._next is None else self._next
        self.end = max(self.start, samples_until(media_time + period))
        self._next = self.end
        self._media_time = media_time
        self._frame_time = frame_time
        self._period = period
        self._reads = {}

    def of_source(self, node_id: str, source: Any) -> np.ndarray | None:
        """This frame's block of ``source``'s sound (bus format, ``count`` samples); None: it has no sound."""
        key = (node_id, "out")
        if key in self._reads:
            return self._reads[key]
        samples = self._read(source)
        self._reads[key] = samples
        return samples

    def of_compositor(self, node_id: str, pin: str) -> np.ndarray | None:
        """The bus-format mix a compositor drew earlier in this frame (:meth:`put_mix`), for a nested compositor."""
        return self._reads.get((node_id, pin))

    def put_mix(self, node_id: str, pin: str, samples: np.ndarray) -> None:
        self._reads[(node_id, pin)] = samples

    def _read(self, source: Any) -> np.ndarray | None:
        buffer = getattr(source, "audio", None)
        if buffer is None:
            return None
        produce = getattr(source, "produce_audio", None)
        if produce is not None:
            produce(self.start, self.count)
        audio_time = getattr(source, "audio_time", None)
        if audio_time is None:
            return buffer.read(self.count)
        # The sound that goes with frame(t) starts at this frame's slot; a block that starts earlier
        # (after dropped slots) starts that much earlier in the source's play clock too.
        lead = self._media_time - self.start / BUS_SAMPLE_RATE
        return buffer.read(self.count, at=audio_time(self._frame_time) - lead - PICTURE_LAG_PERIODS * self._period)
