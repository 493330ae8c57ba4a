"""Timed sound: written without seams, and read on the play clock.

A timed source (``video::file``, ``av::stream_in``) stamps the sound it
writes into its ``AudioBuffer`` with the *play clock*: ``time.monotonic()``
seconds at which it is due, the clock its pictures are shown by.

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
its stamp says, which starts the buffer afresh. A seam under
``SEAM_TOLERANCE_S`` is not a seam at all: a stamp that wobbles (a live
input's clock mapping follows the sender's clock in small steps) is written
on from where the last chunk ended, and the difference is corrected only
once it has grown past the tolerance (a few samples inserted or cut).

:class:`PlayClock` gives the mixer ``audio_time(t)``: the render loop's
time ``t`` on the play clock.
"""

from __future__ import annotations

import time

import numpy as np

from compositord.daemon.engine.audio.buffer import AudioBuffer
from compositord.daemon.engine.audio.bus import silence

MAX_SEAM_S = 0.5  # a gap or overlap up to this long is smoothed over; a longer one is a jump
SEAM_TOLERANCE_S = 0.002  # a stamp this close to where the last chunk ended follows on from it
CLOCK_SLEW = 0.01  # PlayClock follows a render loop that falls behind the play clock this fast
CLOCK_RESYNC_S = 0.1  # ... and jumps to it when further apart than this (a stall, an fps change)


class PlayClock:
    """The render loop's clock ``t`` on the play clock: ``t`` plus an offset measured at each new ``t``.

    A call comes at or after its frame's scheduled time, never before, so the offset takes the smallest
    measurement at once and follows larger ones only slowly (``CLOCK_SLEW``): it tracks the render loop's
    schedule, not the jitter of when each frame got round to asking, and the mixer's timed reads run on
    without seams (its own cursor moves only past ``AudioBuffer``'s ``resync_s``). A jump past
    ``CLOCK_RESYNC_S`` (an fps change, a stall) is measured afresh."""

    def __init__(self) -> None:
        self._last_t: float | None = None
        self._offset: float | None = None

    def audio_time(self, t: float) -> float:
        if t != self._last_t:  # once per output frame, however many compositors ask
            self._last_t = t
            measured = time.monotonic() - t
            offset = self._offset
            if offset is None or abs(measured - offset) > CLOCK_RESYNC_S or measured < offset:
                # The earliest call is the closest to the render loop's schedule: a call can only be late.
                self._offset = measured
            else:
                self._offset = offset + (measured - offset) * CLOCK_SLEW
        assert self._offset is not None
        return t + self._offset


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
            seam = round((at - self._end) * rate) if abs(at - self._end) > SEAM_TOLERANCE_S else 0
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
