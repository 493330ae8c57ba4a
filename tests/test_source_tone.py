"""audio::tone: sample-exact on the loop's clock, phase-continuous across blocks, bursts where predicted,
no picture; its params refused with the field and the reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from compositord.daemon.engine import registry
from compositord.daemon.engine.audio.frame_audio import FrameAudio
from compositord.daemon.engine.sources.base import SourceContext
from compositord.daemon.engine.sources.push import PushInlets
from compositord.daemon.engine.sources.tone import ToneSource
from compositord.protocol import params as params_schema
from compositord.protocol.errors import RemoteProtocolError


def tone(**params: Any) -> ToneSource:
    return ToneSource(params_schema.with_defaults("audio::tone", params_schema.validate("audio::tone", params)))


def expected(start: int, count: int, frequency: float, level_dbfs: float) -> np.ndarray:
    k = np.arange(start, start + count, dtype=np.float64)
    return 10 ** (level_dbfs / 20) * np.sin(2 * np.pi * frequency * k / 48000)


def test_blocks_of_any_size_join_into_the_exact_sine_of_the_loops_clock() -> None:
    source = tone(frequency_hz=997.0, level_dbfs=-6.0)
    sizes = [1600, 1601, 800, 1, 4799, 1600] * 50
    start = 480_000  # ten seconds in: the phase comes from the clock, not from the first block
    blocks: list[np.ndarray] = []
    for size in sizes:
        source.produce_audio(start + sum(b.shape[0] for b in blocks), size)
        blocks.append(source.audio.read(size))
    out = np.concatenate(blocks)
    assert out.dtype == np.float32 and out.shape == (sum(sizes), 2)
    assert np.array_equal(out[:, 0], out[:, 1])
    assert np.max(np.abs(out[:, 0] - expected(start, sum(sizes), 997.0, -6.0))) < 1e-6
    assert source.audio.underrun_samples == 0 and source.audio.dropped_samples == 0


def test_a_gap_in_the_clock_takes_the_phase_the_clock_says() -> None:
    source = tone(frequency_hz=440.0, level_dbfs=0.0)
    first = source.samples(0, 1000)
    later = source.samples(5000, 1000)
    assert np.max(np.abs(first[:, 0] - expected(0, 1000, 440.0, 0.0))) < 1e-6
    assert np.max(np.abs(later[:, 0] - expected(5000, 1000, 440.0, 0.0))) < 1e-6


def test_a_new_frequency_goes_on_from_the_phase_reached() -> None:
    source = tone(frequency_hz=1000.0, level_dbfs=0.0)
    before = source.samples(0, 1000)
    source.configure(params_schema.with_defaults("audio::tone", {"frequency_hz": 500.0, "level_dbfs": 0.0}))
    after = source.samples(1000, 1000)
    # The step between the two blocks is no larger than a step of the new sine itself (no click).
    assert abs(float(after[0, 0] - before[-1, 0])) <= 2 * np.pi * 1000 / 48000


def test_bursts_start_at_every_period_of_the_clock_and_last_burst_ms() -> None:
    source = tone(frequency_hz=1000.0, level_dbfs=-3.0, burst_every_s=0.5, burst_ms=40.0)
    clock = FrameAudio()
    blocks = []
    for slot in range(75):  # 2.5 s at 30 fps
        clock.next_frame(slot / 30, 1 / 30, 0.0)
        block = clock.of_source("tone", source)
        assert block is not None
        blocks.append(block[:, 0])
    out = np.concatenate(blocks)
    # Burst n is exactly the tone over samples [n * 24000, n * 24000 + 1920) and silence follows to the next.
    sounding = np.flatnonzero(np.abs(out) > 1e-4)
    edges = [
        int(k) for k, before in zip(sounding[1:], sounding[:-1], strict=True) if k - before > 48
    ]  # longer than a period of the sine
    assert [round(k / 24000, 2) for k in edges] == [1.0, 2.0, 3.0, 4.0]
    for n in range(5):
        burst = out[n * 24000 : n * 24000 + 1920]
        assert np.max(np.abs(burst - expected(n * 24000, 1920, 1000.0, -3.0))) < 1e-6
        assert not out[n * 24000 + 1920 : (n + 1) * 24000].any()


def test_it_draws_nothing_and_is_registered_as_a_source() -> None:
    kind = registry.source("audio::tone")
    assert kind is not None and not kind.standalone
    made = kind.make(params_schema.with_defaults("audio::tone", {}), SourceContext("tone", Path("."), PushInlets()))
    assert made.frame(0.0) is None
    assert made.audio is not None  # type: ignore[attr-defined]
    assert params_schema.role("audio::tone") == "source"
    assert params_schema.output_pins("audio::tone") == ("out",)


@pytest.mark.parametrize(
    "params, pointer, reason",
    [
        ({"frequency_hz": 0}, "/frequency_hz", "between 1 and 20000"),
        ({"frequency_hz": "loud"}, "/frequency_hz", "number"),
        ({"level_dbfs": 3}, "/level_dbfs", "between -120 and 0"),
        ({"burst_every_s": -1}, "/burst_every_s", "between 0 and 3600"),
        ({"burst_every_s": 0.1, "burst_ms": 100}, "/burst_ms", "shorter than burst_every_s (0.1 s)"),
        ({"volume": 1}, "/volume", "unknown key"),
    ],
)
def test_bad_tone_params_name_the_field_and_the_reason(params: dict[str, Any], pointer: str, reason: str) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        params_schema.validate("audio::tone", params)
    (error,) = caught.value.errors
    assert error.path == pointer and reason in error.message


@pytest.mark.parametrize(
    "params, pointer, reason",
    [
        ({"audio": {"sample_rate": 32000}}, "/audio/sample_rate", "between 44100 and 48000"),
        ({"audio": {"sample_rate": 46000}}, "/audio/sample_rate", "must be 48000 or 44100 (Hz), not 46000"),
        ({"audio": {"channels": "5.1"}}, "/audio/channels", "stereo"),
        ({"audio": {"enabled": "yes"}}, "/audio/enabled", "expected true or false"),
        ({"layers": {"in_0": {"audio": {"gain_db": -61}}}}, "/layers/in_0/audio/gain_db", "between -60 and 24"),
        ({"layers": {"in_1": {"audio": {"mute": 1}}}}, "/layers/in_1/audio/mute", "expected true or false"),
        ({"layers": {"in_0": {"audio": {"follow": True}}}}, "/layers/in_0/audio/follow", "unknown key"),
        (
            {"scenes": {"a": {"layers": {"in_0": {"audio": {"gain_db": 25}}}}}, "program_scene": "a"},
            "/scenes/a/layers/in_0/audio/gain_db",
            "between -60 and 24",
        ),
    ],
)
def test_bad_audio_params_of_the_compositor_name_the_field_and_the_reason(
    params: dict[str, Any], pointer: str, reason: str
) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        params_schema.validate("video::compositor", params)
    (error,) = caught.value.errors
    assert error.path == pointer and reason in error.message


def test_audio_params_default_and_normalize() -> None:
    full = params_schema.with_defaults("video::compositor", params_schema.validate("video::compositor", {}))
    assert full["audio"] == {"enabled": True, "sample_rate": 48000, "channels": "stereo"}
    assert full["layers"]["in_1"]["audio"] == {"gain_db": 0.0, "mute": False, "follow_video": False}
    given = params_schema.validate(
        "video::compositor", {"audio": {"sample_rate": 44100.0}, "layers": {"in_0": {"audio": {"gain_db": -3}}}}
    )
    assert given == {"audio": {"sample_rate": 44100}, "layers": {"in_0": {"audio": {"gain_db": -3.0}}}}
