"""Timed sound written without seams: what a file source puts into its ``AudioBuffer``.

A timed source stamps each chunk with the play-clock time of its first
sample. Stamps are computed (a stream time plus the clock's anchor), so two
chunks that belong together may be a few samples apart or overlap; across a
loop pass the file's sound may end a little before or after its pictures.
``AudioBuffer`` starts afresh at any chunk that does not follow on, which
would throw away the sound still waiting to be played. :class:`SeamlessWriter`
keeps the buffer's timeline unbroken instead: a small gap is filled with
silence and a small overlap is cut from the new chunk, so each chunk is
written exactly where the previous one ended. Only a jump of more than
``MAX_SEAM_S`` (a seek, a clock re-anchored after a stall) is written where
its stamp says, which starts the buffer afresh.
"""

from __future__ import annotations

import numpy as np

from compositord.daemon.engine.audio.buffer import AudioBuffer
from compositord.daemon.engine.audio.bus import silence

MAX_SEAM_S = 0.5  # a gap or overlap up to this long is smoothed over; a longer one is a jump


class SeamlessWriter:
    def __init__(self, buffer: AudioBuffer) -> None:
        self.buffer = buffer
        self._end: float | None = None  # play-clock time where the last chunk written ends
        self.filled_samples = 0  # silence written into gaps
        self.trimmed_samples = 0  # overlapping samples cut

    def restart(self) -> None:
        """The next chunk starts a new timeline (new params, a new file)."""
        self._end = None

    def write(self, samples: np.ndarray, at: float) -> None:
        rate = self.buffer.sample_rate
        if self._end is not None and abs(at - self._end) <= MAX_SEAM_S:
            seam = round((at - self._end) * rate)
            if seam > 0:
                samples = np.concatenate([silence(seam, samples.shape[1]), samples])
                self.filled_samples += seam
            elif seam < 0:
                cut = min(-seam, samples.shape[0])
                samples = samples[cut:]
                self.trimmed_samples += cut
            at = self._end
        if samples.shape[0]:
            self.buffer.write(samples, at=at)
            self._end = at + samples.shape[0] / rate
