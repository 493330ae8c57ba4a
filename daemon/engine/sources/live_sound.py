"""The sound of a live input (``av::stream_in``): decoded on the receiver thread, played by its timestamps.

:class:`LiveSound` is the audio consumer a :class:`~.live_av.LiveAVSource`
hands every decoded ``av.AudioFrame``. It converts them to the bus format
(``audio.resample``) and writes them into the node's ``AudioBuffer``, each
chunk stamped with the local time its timestamp is due at, by the very
mapping the pictures are shown with (``FramePacer.due_time``: the stream's
clock, ``latency_ms`` behind arrival, following the sender's clock). The
mixer reads it by time (the source's ``audio_time``), so sound and picture
keep the relation the sender gave them: a stream whose sound arrives ahead
of its pictures (MPEG-TS muxers send it early, in bursts) plays both
together, where reading in arrival order would not.

A sender may deliver its sound later than the pictures it goes with (an
MPEG-TS muxer packs ~100-200 ms of AAC into one packet): each chunk holds the
mapping back (``FramePacer.hold_for``) so that it is due ``SOUND_MARGIN_S``
after it arrived at the earliest; the pictures wait as long, and both keep
together, ``latency_ms`` plus however late the sound comes behind arrival.

Drift: the mapping follows the sender's clock in small steps; the writer
(``audio.timeline.SeamlessWriter``) writes on from where the last chunk
ended until the stamps have moved more than its tolerance away, then
inserts or cuts that many samples. A jump of the mapping (a reconnect, a
timestamp jump) starts the buffer afresh. Sound that comes before the first
picture has nothing to keep in step with and is dropped (counted in
``dropped_before_picture``). A sender that stalls leaves silence
(``underrun_samples``). Each (re)open clears the buffer: the sound of a peer
that went away never plays after the next one's.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

from compositord.daemon.engine.audio.buffer import AudioBuffer
from compositord.daemon.engine.audio.resample import BusResampler
from compositord.daemon.engine.audio.timeline import SeamlessWriter

SOUND_MARGIN_S = 0.06  # sound is due no sooner than this after it arrives: the mixer reads up to a frame ahead


class StreamClock(Protocol):
    """The pictures' mapping from stream time to local time (``FramePacer``)."""

    def hold_for(self, pts: float, margin_s: float) -> None: ...

    def due_time(self, pts: float) -> float | None: ...


class LiveSound:
    def __init__(self, clock: StreamClock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.buffer = AudioBuffer()
        self._writer = SeamlessWriter(self.buffer)
        self._resampler = BusResampler()
        self.stream_has_audio = False
        self.dropped_before_picture = 0  # samples

    # ------------------------------------------------------------------ receiver thread

    def opened(self, stream: Any | None) -> None:
        """The input was (re)opened; ``stream`` is its audio stream, or None when it has none."""
        with self._lock:
            self.stream_has_audio = stream is not None
            self.buffer.clear()
            self._writer.restart()
            self._resampler.reset()

    def __call__(self, frame: Any) -> None:
        with self._lock:
            for chunk in self._resampler.convert(frame):
                due = None
                if chunk.time is not None:
                    self._clock.hold_for(chunk.time, SOUND_MARGIN_S)
                    due = self._clock.due_time(chunk.time)
                if due is None:
                    self.dropped_before_picture += chunk.samples.shape[0]
                    continue
                self._writer.write(chunk.samples, due)
