"""A/V sync pattern for sinks, and its measurement in what they wrote.

``SyncPattern`` makes what a compositor hands its sinks without a render loop:
I420 frames, black with a white flash for ``flash_frames`` frames every
``period_s``, and the mixer's contiguous ``AudioBlock``s (one per frame:
``samples_until(t)`` to ``samples_until(t + 1/fps)``), silent but for a tone
burst that starts on the same sample as each flash. ``measure`` decodes a
file or stream with PyAV and finds both onsets on the container's clock:
every decoded frame placed by its own timestamp (``frame.time``), so the
encoder's priming is accounted for as the container signals it (negative
first pts, edit list, codec delay), not guessed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np

from compositord.daemon.engine.audio.bus import AudioBlock, samples_until
from compositord.daemon.engine.render.frames import OutputFrame
from compositord.daemon.engine.sinks.base import SinkFrame

BLACK_Y, WHITE_Y, NEUTRAL_C = 16, 235, 128
TONE_AMPLITUDE = 0.5


@dataclass
class SyncPattern:
    width: int = 160
    height: int = 96
    fps: int = 30
    sample_rate: int = 48_000
    channels: int = 2
    period_s: float = 1.0
    flash_frames: int = 3
    tone_hz: float = 1000.0
    start_frame: int = 0  # the first frame's slot: a sink's first frame need not be the loop's first
    _frames: dict[bool, bytes] = field(default_factory=dict, init=False)

    def frame_time(self, index: int) -> float:
        return (self.start_frame + index) / self.fps

    def is_flash(self, index: int) -> bool:
        slot = self.start_frame + index
        per_period = round(self.period_s * self.fps)
        return slot % per_period < self.flash_frames

    def flash_times(self, count: int) -> list[float]:
        """Where the flashes among frames ``0..count-1`` start in the output (seconds from its first frame)."""
        return [i / self.fps for i in range(count) if self.is_flash(i) and (i == 0 or not self.is_flash(i - 1))]

    def _picture(self, white: bool) -> bytes:
        if white not in self._frames:
            luma = np.full(self.width * self.height, WHITE_Y if white else BLACK_Y, np.uint8)
            chroma = np.full(2 * (self.width // 2) * (self.height // 2), NEUTRAL_C, np.uint8)
            self._frames[white] = luma.tobytes() + chroma.tobytes()
        return self._frames[white]

    def audio(self, start: int, end: int) -> np.ndarray:
        """Samples ``start..end`` of the render loop's clock: the tone during each flash, else silence."""
        index = np.arange(start, end)
        per_period = round(self.period_s * self.sample_rate)
        burst = round(self.flash_frames * self.sample_rate / self.fps)
        origin = samples_until(self.start_frame / self.fps, self.sample_rate)
        # Bursts on the loop's clock: they start on the sample of each flash slot (slot 0, per_period, ...).
        phase = index % per_period
        on = phase < burst
        tone = TONE_AMPLITUDE * np.sin(2 * math.pi * self.tone_hz * (index - origin) / self.sample_rate)
        mono = np.where(on, tone, 0.0).astype(np.float32)
        return np.repeat(mono[:, None], self.channels, axis=1)

    def frame(self, index: int) -> SinkFrame:
        t = self.frame_time(index)
        start = samples_until(t, self.sample_rate)
        end = samples_until(self.frame_time(index + 1), self.sample_rate)
        block = AudioBlock(self.audio(start, end), start, self.sample_rate)
        picture = OutputFrame("i420", self.width, self.height, self._picture(self.is_flash(index)), "bt709", index)
        return SinkFrame(picture, t, self.fps, block)

    def frames(self, count: int) -> Iterator[SinkFrame]:
        for index in range(count):
            yield self.frame(index)


@dataclass
class Measured:
    video_codec: str
    audio_codec: str | None
    sample_rate: int
    channels: int
    video_times: list[float]  # each decoded frame's time
    video_onsets: list[float]  # times of the frames where a flash starts
    audio_onsets: list[float]  # times where a burst starts
    audio_start: float  # time of the first decoded sample
    audio_samples: np.ndarray  # mono mix, placed from audio_start
    container_format: str

    def video_duration(self, frame_s: float) -> float:
        """From the first frame's start to the last one's end (frames last ``frame_s``; dropped ones leave gaps)."""
        return self.video_times[-1] - self.video_times[0] + frame_s if self.video_times else 0.0

    @property
    def audio_duration(self) -> float:
        return len(self.audio_samples) / self.sample_rate if self.sample_rate else 0.0

    def dominant_frequency(self, start_s: float, length_s: float) -> float:
        begin = round((start_s - self.audio_start) * self.sample_rate)
        window = self.audio_samples[begin : begin + round(length_s * self.sample_rate)]
        spectrum = np.abs(np.fft.rfft(window * np.hanning(len(window))))
        return float(np.fft.rfftfreq(len(window), 1 / self.sample_rate)[int(np.argmax(spectrum))])

    def offsets(self) -> list[float]:
        """For each flash, the nearest burst onset minus the flash onset (seconds)."""
        if not self.audio_onsets:
            return []
        audio = np.array(self.audio_onsets)
        return [float(audio[np.argmin(np.abs(audio - onset))] - onset) for onset in self.video_onsets]


def _luma_mean(frame: Any) -> float:
    return float(frame.to_ndarray(format="gray").mean())


def measure(path_or_url: str | Path, *, open_options: dict[str, Any] | None = None, **open_kwargs: Any) -> Measured:
    """Decode everything: flash onsets (mean luma crosses the middle) and burst onsets (the level crosses half
    the tone's amplitude after at least 0.2 s below it), each on the container's clock."""
    video_times: list[float] = []
    video_onsets: list[float] = []
    chunks: list[tuple[float, np.ndarray]] = []
    with av.open(str(path_or_url), options=open_options or {}, **open_kwargs) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        streams = [video] + ([audio] if audio is not None else [])
        was_white = False
        try:
            for packet in container.demux(*streams):
                for frame in packet.decode():
                    if frame.time is None:
                        raise ValueError(f"a decoded frame without a timestamp in {path_or_url}: nothing to place it by")
                    if isinstance(frame, av.VideoFrame):
                        white = _luma_mean(frame) > (BLACK_Y + WHITE_Y) / 2
                        video_times.append(float(frame.time))
                        if white and not was_white:
                            video_onsets.append(float(frame.time))
                        was_white = white
                    elif isinstance(frame, av.AudioFrame):
                        samples = frame.to_ndarray()
                        # planar (channels, n) or packed (1, n * channels): a mono mix either way
                        channels = frame.layout.nb_channels
                        mono = samples.mean(axis=0) if frame.format.is_planar else samples.reshape(-1, channels).mean(axis=1)
                        chunks.append((float(frame.time), mono.astype(np.float32)))
        except av.error.OSError:
            pass  # a network stream ends with an I/O error once the reader's timeout runs out
        audio_codec = audio.codec_context.name if audio is not None else None
        rate = audio.codec_context.sample_rate if audio is not None else 0
        channels = audio.codec_context.layout.nb_channels if audio is not None else 0
        format_name = container.format.name
        video_codec = video.codec_context.name
    placed, audio_start = _place(chunks, rate)
    return Measured(
        video_codec,
        audio_codec,
        rate,
        channels,
        video_times,
        video_onsets,
        _onsets(placed, audio_start, rate),
        audio_start,
        placed,
        format_name,
    )


def _place(chunks: list[tuple[float, np.ndarray]], rate: int) -> tuple[np.ndarray, float]:
    """The decoded frames as one signal, each at its own timestamp (a gap stays silent)."""
    if not chunks:
        return np.zeros(0, np.float32), 0.0
    start = chunks[0][0]
    end = max(time + len(samples) / rate for time, samples in chunks)
    placed = np.zeros(round((end - start) * rate) + 1, np.float32)
    for time, samples in chunks:
        at = round((time - start) * rate)
        placed[at : at + len(samples)] = samples[: len(placed) - at]
    return placed, start


def _onsets(signal: np.ndarray, start: float, rate: int) -> list[float]:
    if rate == 0:
        return []
    loud = np.flatnonzero(np.abs(signal) > TONE_AMPLITUDE / 2)
    if len(loud) == 0:
        return []
    first_after_quiet = np.diff(loud, prepend=loud[0] - round(0.2 * rate)) >= round(0.2 * rate)
    return [start + int(index) / rate for index in loud[first_after_quiet]]
