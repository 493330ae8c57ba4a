"""The pieces between a decoder and an input's AudioBuffer: BusResampler (any decoded sound to the bus,
stamped), SeamlessWriter (timed chunks without seams), PlayClock (audio_time), LiveSound (a live input's sound, on its pictures' clock)."""

from __future__ import annotations

import time
from fractions import Fraction

import av
import numpy as np
import pytest

from compositord.daemon.engine.audio.buffer import AudioBuffer
from compositord.daemon.engine.audio.bus import BUS_CHANNELS, BUS_DTYPE, BUS_SAMPLE_RATE
from compositord.daemon.engine.audio.resample import BusResampler
from compositord.daemon.engine.audio.timeline import PlayClock, SeamlessWriter
from compositord.daemon.engine.sources.live_sound import LiveSound
from compositord.daemon.engine.sources.pacing import FramePacer
from compositord.testing.media import sine


def decoded(samples: np.ndarray, rate: int, pts: int | None, layout: str = "mono") -> av.AudioFrame:
    """A frame as a decoder hands it out: packed s16, ``pts`` in 1/rate units."""
    channels = 1 if layout == "mono" else 2
    data = np.round(np.repeat(samples[np.newaxis, :], channels, axis=0).T.reshape(1, -1) * 32767).astype(np.int16)
    frame = av.AudioFrame.from_ndarray(data, format="s16", layout=layout)
    frame.sample_rate = rate
    frame.time_base = Fraction(1, rate)
    frame.pts = pts
    return frame


def test_resampler_makes_bus_format_stamped_by_samples_counted() -> None:
    resampler = BusResampler()
    tone = sine(44_100, 1000.0, 44_100, level=0.5)
    chunks = []
    for first in range(0, 44_100, 1024):
        chunks += resampler.convert(decoded(tone[first : first + 1024], 44_100, first + 4410))  # starts at 0.1 s
    assert all(c.samples.dtype == BUS_DTYPE and c.samples.shape[1] == BUS_CHANNELS for c in chunks)
    assert chunks[0].time == pytest.approx(0.1)
    running = chunks[0].time
    for chunk in chunks:  # each chunk starts where the samples before it end, exactly
        assert chunk.time == pytest.approx(running, abs=1e-9)
        running += chunk.samples.shape[0] / BUS_SAMPLE_RATE
    total = sum(c.samples.shape[0] for c in chunks)
    assert abs(total - BUS_SAMPLE_RATE) < 64  # one second at 48 kHz, less the resampler's delay
    sound = np.concatenate([c.samples for c in chunks])
    assert np.array_equal(sound[:, 0], sound[:, 1])
    assert np.abs(sound[1000:-1000, 0]).max() == pytest.approx(0.5, abs=0.01)  # mono at its own level


def test_resampler_starts_a_new_run_at_a_gap_and_at_a_new_format() -> None:
    resampler = BusResampler()
    tone = sine(4096, 440.0, 48_000)
    resampler.convert(decoded(tone[:2048], 48_000, 0))
    # One second later than the samples counted so far: a gap, stamped by its own timestamp.
    after_gap = resampler.convert(decoded(tone[2048:], 48_000, 48_000 + 2048))
    assert after_gap and after_gap[0].time == pytest.approx(48_000 / 48_000 + 2048 / 48_000, abs=1e-6)
    stereo = resampler.convert(decoded(tone[:1024], 44_100, 44_100 * 3, layout="stereo"))
    assert stereo and stereo[0].time == pytest.approx(3.0)


def test_seamless_writer_fills_small_gaps_cuts_small_overlaps_and_jumps_at_large_ones() -> None:
    buffer = AudioBuffer(capacity_s=4.0)
    writer = SeamlessWriter(buffer)
    ones = np.ones((480, 2), dtype=np.float32)
    writer.write(ones, at=10.0)  # 10.00 .. 10.01
    writer.write(ones * 2, at=10.02)  # 10 ms late: 480 samples of silence go first
    writer.write(ones * 3, at=10.025)  # 5 ms early against 10.03: its first 240 samples are cut
    assert (writer.filled_samples, writer.trimmed_samples) == (480, 240)
    sound = buffer.read(480 * 4, at=10.0)
    expected = np.concatenate([np.ones(480), np.zeros(480), np.full(480, 2.0), np.full(240, 3.0), np.zeros(240)])
    assert np.array_equal(sound[:, 0], expected)
    assert buffer.stats()["resyncs"] == 0
    writer.write(ones * 4, at=20.0)  # a jump: the buffer starts afresh there
    assert np.array_equal(buffer.read(480, at=20.0)[:, 0], np.full(480, 4.0))


def test_live_sound_is_stamped_by_the_pictures_clock_and_a_reopen_clears_it() -> None:
    offset: list[float] = []  # the pacer's mapping: none until the first picture

    class Mapping:
        def hold_for(self, pts: float, margin_s: float) -> None:
            pass  # the sound here comes in time (FramePacer.hold_for has its own test)

        def due_time(self, pts: float) -> float | None:
            return pts + offset[0] if offset else None

    sound = LiveSound(Mapping())
    sound.opened(object())
    tone = sine(4800, 1000.0, 48_000)
    sound(decoded(tone, 48_000, 0))  # before any picture: nothing to keep in step with
    assert sound.dropped_before_picture > 0 and sound.buffer.buffered_s == 0
    offset.append(100.0)
    sound(decoded(tone, 48_000, 4800))  # pts 0.1 s: due at 100.1 on the local clock
    sound(decoded(tone, 48_000, 9600))
    buffer = sound.buffer
    ahead = buffer.read(4800, at=100.0)  # 100.0 .. 100.1: before the sound
    assert not np.any(ahead)
    assert np.abs(buffer.read(4800, at=100.1)[:, 0]).max() > 0.4
    assert sound.stream_has_audio
    sound.opened(None)  # reconnected to a peer without sound: nothing of the last one is left
    assert buffer.buffered_s == 0 and not sound.stream_has_audio


def test_a_wobbling_stamp_follows_on_until_it_has_moved_past_the_tolerance() -> None:
    buffer = AudioBuffer()
    writer = SeamlessWriter(buffer)
    chunk = np.ones((480, 2), dtype=np.float32)
    writer.write(chunk, at=5.0)
    writer.write(chunk, at=5.0101)  # 0.1 ms late: written on from 5.01, nothing inserted
    assert writer.filled_samples == 0 and writer.trimmed_samples == 0
    writer.write(chunk, at=5.025)  # 5 ms late: 240 samples of silence first
    assert writer.filled_samples == 240


def test_play_clock_follows_the_render_loops_clock_smoothly() -> None:
    clock = PlayClock()
    first = clock.audio_time(0.0)
    assert first == pytest.approx(time.monotonic(), abs=0.05)
    assert clock.audio_time(0.0) == first  # asked again in the same frame: the same answer
    time.sleep(0.02)
    later = clock.audio_time(0.02)
    assert later - first == pytest.approx(0.02, abs=0.005)  # t's own steps, not the jitter of when it was asked
    assert clock.audio_time(5.0) == pytest.approx(time.monotonic(), abs=0.05)  # a jump: measured afresh


def test_late_sound_holds_the_pictures_mapping_back() -> None:
    now = [100.0]
    pacer: FramePacer[str] = FramePacer(latency_s=0.05, clock=lambda: now[0])
    pacer.hold_for(0.0, 0.06)  # before any picture: no mapping to hold
    assert pacer.due_time(0.0) is None
    pacer.push("picture", 0.0)  # arrives at 100.0: due at 100.05
    assert pacer.due_time(1.0) == pytest.approx(101.05)
    now[0] = 100.2
    pacer.hold_for(0.0, 0.06)  # the sound stamped 0.0 arrives 0.2 s after its picture
    assert pacer.due_time(1.0) == pytest.approx(101.26) and pacer.holds == 1  # the pictures wait too
    assert pacer.extra_s == pytest.approx(0.21)
    now[0] = 100.24
    pacer.push("next", 0.24)  # on time; the pictures' own correction keeps the extra delay: no pull back down
    assert pacer.due_time(1.0) == pytest.approx(101.26)
    now[0] = 110.0
    pacer.hold_for(9.9, 0.06)  # sound with room to spare: the extra comes down slowly (2 ms a second)
    assert pacer.extra_s == pytest.approx(0.21 - 0.002 * 9.8) and pacer.holds == 1
