"""The sound of a live input (``av::stream_in``): decoded on the receiver thread, played in arrival order.

:class:`LiveSound` is the audio consumer a :class:`~.live_av.LiveAVSource`
hands every decoded ``av.AudioFrame``. It converts them to the bus format
(``audio.resample``) and writes them into a live ``AudioBuffer``, which the
mixer reads first in, first out: a producer slower than the output clock
leaves gaps of silence (``underrun_samples``), a faster one has its backlog
dropped beyond ``max_backlog_s`` (``dropped_samples``); that is the drift
correction, counted in the node's stats.

The picture of a live input is shown ``latency_s`` after it arrives (the
pacer's jitter room); the sound keeps in step by starting ``latency_s``
late too: whenever it starts, or starts again after the buffer ran dry, it
is preceded by that much silence. The backlog allowed is the latency plus
``JITTER_ROOM_S``, room for streams that deliver their sound in bursts
(MPEG-TS packs several audio frames into one packet). Each (re)open clears
the buffer: sound of a peer that went away never plays after the next one's.
"""

from __future__ import annotations

import threading
from typing import Any

from compositord.daemon.engine.audio.buffer import AudioBuffer
from compositord.daemon.engine.audio.bus import samples_until, silence
from compositord.daemon.engine.audio.resample import BusResampler

JITTER_ROOM_S = 0.25


class LiveSound:
    def __init__(self, latency_s: float) -> None:
        self._lock = threading.Lock()  # set_latency (render thread) against the receiver thread
        self._latency_s = latency_s
        self.buffer = AudioBuffer(max_backlog_s=latency_s + JITTER_ROOM_S)
        self._resampler = BusResampler()
        self.stream_has_audio = False

    def set_latency(self, latency_s: float) -> None:
        """A new latency: a new buffer (its backlog bound changes), filled from the next sound on."""
        with self._lock:
            if latency_s == self._latency_s:
                return
            self._latency_s = latency_s
            self.buffer = AudioBuffer(max_backlog_s=latency_s + JITTER_ROOM_S)

    # ------------------------------------------------------------------ receiver thread

    def opened(self, stream: Any | None) -> None:
        """The input was (re)opened; ``stream`` is its audio stream, or None when it has none."""
        with self._lock:
            self.stream_has_audio = stream is not None
            self.buffer.clear()
            self._resampler.reset()

    def __call__(self, frame: Any) -> None:
        with self._lock:
            buffer = self.buffer
            for chunk in self._resampler.convert(frame):
                if buffer.buffered_s == 0 and self._latency_s > 0:
                    buffer.write(silence(samples_until(self._latency_s)))  # start latency_s late, as the picture does
                buffer.write(chunk.samples)
