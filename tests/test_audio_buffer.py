"""The audio buffer between a source's thread and the mixer: bounded, padded with silence, drift-corrected."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compositord.daemon.engine.audio.buffer import AudioBuffer
from compositord.daemon.engine.audio.bus import BUS_SAMPLE_RATE


def ramp(start: int, count: int) -> np.ndarray:
    """Samples whose value is their own index (both channels), so a read shows exactly which ones it got."""
    values = np.arange(start, start + count, dtype=np.float32)
    return np.stack([values, values], axis=1)


def test_live_reads_come_in_order_and_pad_with_silence_when_short() -> None:
    buffer = AudioBuffer(max_backlog_s=1.0)
    buffer.write(ramp(0, 100))
    first = buffer.read(60)
    assert first[:, 0].tolist() == list(range(60))
    second = buffer.read(60)
    assert second[:40, 0].tolist() == list(range(60, 100))
    assert not second[40:].any()
    assert buffer.underrun_samples == 20


def test_live_backlog_beyond_the_bound_drops_the_oldest() -> None:
    buffer = AudioBuffer(max_backlog_s=100 / BUS_SAMPLE_RATE)
    buffer.write(ramp(0, 1000))
    block = buffer.read(50)
    # 1000 buffered, 50 wanted, 100 may wait: the 850 oldest go.
    assert block[:, 0].tolist() == list(range(850, 900))
    assert buffer.dropped_samples == 850
    assert buffer.buffered_s == pytest.approx(100 / BUS_SAMPLE_RATE)


def test_capacity_is_never_exceeded() -> None:
    buffer = AudioBuffer(capacity_s=1000 / BUS_SAMPLE_RATE, max_backlog_s=1.0)
    buffer.write(ramp(0, 700))
    buffer.write(ramp(700, 700))
    assert buffer.buffered_s == pytest.approx(1000 / BUS_SAMPLE_RATE)
    assert buffer.dropped_samples == 400
    assert buffer.read(1000)[:, 0].tolist() == list(range(400, 1400))
    buffer.write(ramp(0, 2500))  # one chunk larger than the whole buffer keeps its newest part
    assert buffer.read(1000)[:, 0].tolist() == list(range(1500, 2500))


def test_timed_reads_follow_the_writers_clock() -> None:
    rate = BUS_SAMPLE_RATE
    buffer = AudioBuffer()
    buffer.write(ramp(0, rate), at=10.0)  # one second of sound that plays from t = 10 s
    # A read at 10.5 s drops the first half second and starts exactly there.
    block = buffer.read(480, at=10.5)
    assert block[0, 0] == rate // 2
    # The next read runs on from the cursor although the frame clock jittered by 3 ms.
    block = buffer.read(480, at=10.513)
    assert block[0, 0] == rate // 2 + 480
    assert buffer.resyncs == 0
    # A read far from the cursor (a frame the loop dropped, a pause) moves it.
    block = buffer.read(480, at=10.8)
    assert block[0, 0] == round(0.8 * rate)
    assert buffer.resyncs == 1


def test_timed_read_before_the_sound_arrives_leads_with_silence() -> None:
    buffer = AudioBuffer()
    buffer.write(ramp(1, 480), at=1.005)
    block = buffer.read(480, at=1.0)
    lead = round(0.005 * BUS_SAMPLE_RATE)
    assert not block[:lead].any()
    assert block[lead, 0] == 1


def test_a_timed_chunk_that_does_not_follow_on_starts_afresh() -> None:
    buffer = AudioBuffer()
    buffer.write(ramp(0, 480), at=5.0)
    buffer.write(ramp(10_000, 480), at=0.0)  # the file looped
    assert buffer.dropped_samples == 480
    assert buffer.read(480, at=0.0)[0, 0] == 10_000


def test_a_wrong_layout_is_refused() -> None:
    with pytest.raises(ValueError, match="bus layout"):
        AudioBuffer().write(np.zeros((10, 1), dtype=np.float32))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 3000)), max_size=40))
def test_live_sound_is_never_reordered_or_duplicated(operations: list[tuple[bool, int]]) -> None:
    buffer = AudioBuffer(capacity_s=4000 / BUS_SAMPLE_RATE, max_backlog_s=1000 / BUS_SAMPLE_RATE)
    written = 0
    last_seen = -1.0
    for is_write, count in operations:
        if is_write:
            buffer.write(ramp(written + 1, count))  # sample values start at 1: 0 is silence
            written += count
        else:
            values = buffer.read(count)[:, 0]
            heard = values[values > 0]
            assert (np.diff(heard) == 1).all()  # contiguous run: nothing reordered or repeated inside a read
            if heard.size:
                assert heard[0] > last_seen  # and nothing older than what an earlier read gave
                last_seen = float(heard[-1])
        assert buffer.buffered_s <= 4000 / BUS_SAMPLE_RATE
