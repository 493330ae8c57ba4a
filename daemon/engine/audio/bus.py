"""The engine's one internal audio format, and the block of mixed sound that travels with each frame.

Every audio source converts what it decodes or receives to the bus format
(48 kHz, stereo, float32 samples in [-1, 1], interleaved as ``(samples,
channels)`` arrays) before it buffers it, so the mixer adds arrays and never
resamples per input. A compositor's output sample rate and channel layout
(its params) are applied once, to the mix.

A compositor hands its sinks one :class:`AudioBlock` per output frame. The
blocks of one compositor are contiguous: each starts at the sample the
previous one ended at, so a frame slot the render loop dropped still has its
sound, and an encoder can use ``start_sample`` as the audio pts (time base
``1 / sample_rate``) beside the video's slot pts: both count from the
render loop's clock zero, which is how picture and sound stay in sync.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BUS_SAMPLE_RATE = 48_000
BUS_CHANNELS = 2
BUS_DTYPE = np.float32


def silence(count: int, channels: int = BUS_CHANNELS) -> np.ndarray:
    return np.zeros((count, channels), dtype=BUS_DTYPE)


def samples_until(media_time: float, sample_rate: int = BUS_SAMPLE_RATE) -> int:
    """The index of the first sample at or after ``media_time`` seconds on the render loop's clock."""
    return round(media_time * sample_rate)


@dataclass(frozen=True)
class AudioBlock:
    """Mixed sound for one output frame: ``samples`` is ``(count, channels)`` float32 at ``sample_rate``,
    starting at sample ``start_sample`` of the render loop's clock."""

    samples: np.ndarray
    start_sample: int
    sample_rate: int

    @property
    def channels(self) -> int:
        return int(self.samples.shape[1])

    @property
    def count(self) -> int:
        return int(self.samples.shape[0])

    @property
    def start_time(self) -> float:
        return self.start_sample / self.sample_rate

    @property
    def end_sample(self) -> int:
        return self.start_sample + self.count
