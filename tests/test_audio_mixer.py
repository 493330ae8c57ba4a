"""The mixer without a render loop: exact gains, mute, follow_video through opacity, cuts and transitions,
clipping, 44.1 kHz without drift, mono, meters of a known sine, and the loop's per-frame audio clock."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest

from compositord.daemon.engine.audio.buffer import AudioBuffer
from compositord.daemon.engine.audio.bus import BUS_SAMPLE_RATE, samples_until
from compositord.daemon.engine.audio.frame_audio import PICTURE_LAG_PERIODS, FrameAudio
from compositord.daemon.engine.audio.meters import FLOOR_DBFS, LevelMeter, to_dbfs
from compositord.daemon.engine.audio.mixer import (
    CompositorMixer,
    InputSettings,
    ProgramPresence,
    input_settings,
    layer_presence,
)
from compositord.daemon.engine.audio.output_format import OutputFormat, output_position
from compositord.daemon.engine.scene_program import SceneProgram
from compositord.protocol import params as params_schema

BLOCK = 1600  # one frame at 30 fps


def sine(start: int, count: int, frequency: float = 1000.0, amplitude: float = 0.5, rate: int = BUS_SAMPLE_RATE) -> np.ndarray:
    k = np.arange(start, start + count, dtype=np.float64)
    mono = (amplitude * np.sin(2 * np.pi * frequency * k / rate)).astype(np.float32)
    return np.stack([mono, mono], axis=1)


def constant(value: float, count: int = BLOCK) -> np.ndarray:
    return np.full((count, 2), value, dtype=np.float32)


def mix_once(
    mixer: CompositorMixer,
    inputs: dict[str, np.ndarray],
    settings: dict[str, InputSettings],
    start: int = 0,
    rate: int = 48000,
    layout: str = "stereo",
) -> np.ndarray:
    block = mixer.mix(start, inputs, settings, sample_rate=rate, layout=layout)
    assert block is not None
    return block.samples


# ----------------------------------------------------------------------------- gain, mute, sum, clip


@pytest.mark.parametrize("gain_db", [-60.0, -20.0, -6.0, 0.0, 3.5, 24.0])
def test_a_steady_gain_is_exact_in_db(gain_db: float) -> None:
    mixer = CompositorMixer()
    source = constant(0.01)
    out = mix_once(mixer, {"in_0": source}, {"in_0": InputSettings(gain_db=gain_db)})
    expected = np.float32(0.01) * np.float32(10 ** (gain_db / 20))
    assert np.allclose(out, expected, rtol=1e-6, atol=0)
    assert 20 * math.log10(float(out[0, 0]) / 0.01) == pytest.approx(gain_db, abs=1e-4)


def test_mute_silences_after_a_one_block_ramp_and_a_change_of_gain_never_jumps() -> None:
    mixer = CompositorMixer()
    on = {"in_0": InputSettings()}
    off = {"in_0": InputSettings(mute=True)}
    assert np.allclose(mix_once(mixer, {"in_0": constant(0.5)}, on), 0.5)
    ramp = mix_once(mixer, {"in_0": constant(0.5)}, off, start=BLOCK)
    # The mute ramps down across the block (no click), monotonically, and ends at silence.
    assert ramp[0, 0] == pytest.approx(0.5, abs=0.001)
    assert ramp[-1, 0] == 0.0
    assert np.all(np.diff(ramp[:, 0]) <= 0)
    assert np.max(np.abs(np.diff(ramp[:, 0]))) < 0.001
    assert not mix_once(mixer, {"in_0": constant(0.5)}, off, start=2 * BLOCK).any()
    # Unmuted at +6 dB: up again in one block, then exact.
    mix_once(mixer, {"in_0": constant(0.25)}, {"in_0": InputSettings(gain_db=6.0)}, start=3 * BLOCK)
    steady = mix_once(mixer, {"in_0": constant(0.25)}, {"in_0": InputSettings(gain_db=6.0)}, start=4 * BLOCK)
    assert np.allclose(steady, 0.25 * 10 ** (6 / 20), rtol=1e-6)


def test_inputs_are_summed_and_the_sum_is_clipped_and_counted() -> None:
    mixer = CompositorMixer()
    inputs = {"in_0": constant(0.4), "in_1": constant(0.3)}
    settings = {"in_0": InputSettings(), "in_1": InputSettings()}
    assert np.allclose(mix_once(mixer, inputs, settings), 0.7)
    assert mixer.clipped_samples == 0
    loud = {"in_0": constant(0.8), "in_1": constant(-0.1)}
    loud["in_1"][:10] = 0.9  # the first 10 samples sum to 1.7
    out = mix_once(mixer, loud, settings, start=BLOCK)
    assert np.all(out[:10] == 1.0)
    assert np.allclose(out[10:], 0.7)
    assert mixer.clipped_samples == 10 * 2  # both channels
    assert out.max() <= 1.0 and out.min() >= -1.0


def test_no_input_with_sound_is_no_block() -> None:
    mixer = CompositorMixer()
    assert mixer.mix(0, {}, {}, sample_rate=48000, layout="stereo") is None
    assert mixer.reading([]) is None


def test_mono_is_the_mean_of_left_and_right() -> None:
    mixer = CompositorMixer()
    stereo = np.stack([np.full(BLOCK, 0.6, np.float32), np.full(BLOCK, -0.2, np.float32)], axis=1)
    out = mix_once(mixer, {"in_0": stereo}, {"in_0": InputSettings()}, layout="mono")
    assert out.shape == (BLOCK, 1)
    assert np.allclose(out, 0.2)
    # A sound that is the same in both channels keeps its level in mono.
    assert np.allclose(mix_once(mixer, {"in_0": constant(0.5)}, {"in_0": InputSettings()}, BLOCK, layout="mono"), 0.5)


# ----------------------------------------------------------------------------- follow_video


def compositor(**params: Any) -> dict[str, Any]:
    return params_schema.with_defaults("video::compositor", params_schema.validate("video::compositor", params))


def test_presence_is_opacity_and_zero_when_not_visible() -> None:
    assert layer_presence({"opacity": 0.25, "visible": True}) == 0.25
    assert layer_presence({"opacity": 1.0, "visible": False}) == 0.0
    assert layer_presence(None) == 0.0


def test_follow_video_scales_the_gain_by_opacity_and_is_ignored_without_it() -> None:
    full = compositor(
        layers={
            "in_0": {"opacity": 0.5, "audio": {"follow_video": True, "gain_db": -6.0}},
            "in_1": {"opacity": 0.5, "audio": {"gain_db": -6.0}},
        }
    )
    presences = ProgramPresence().next_frame(full["layers"])
    settings = input_settings(full["layers"], presences)
    assert settings["in_0"].linear_gain == pytest.approx(0.5 * 10 ** (-6 / 20))
    assert settings["in_1"].linear_gain == pytest.approx(10 ** (-6 / 20))
    out = mix_once(CompositorMixer(), {"in_0": constant(0.2)}, settings)
    assert np.allclose(out, 0.2 * 0.5 * 10 ** (-6 / 20), rtol=1e-6)


def two_scenes(transition: dict[str, Any], program: str = "a") -> dict[str, Any]:
    follow = {"audio": {"follow_video": True}}
    return compositor(
        num_inputs=2,
        scenes={
            "a": {"layers": {"in_0": follow, "in_1": {**follow, "visible": False}}},
            "b": {"layers": {"in_0": {**follow, "visible": False}, "in_1": follow}},
        },
        program_scene=program,
        transition=transition,
    )


def presences_over(program: SceneProgram, presence: ProgramPresence, full: dict[str, Any], frames: int) -> list[dict[str, float]]:
    seen = []
    for _ in range(frames):
        plan = program.next_frame(full, 30, can_snapshot=True)
        seen.append(
            presence.next_frame(
                plan.params["layers"],
                transition=plan.transition,
                outgoing_layers=plan.outgoing_params["layers"] if plan.outgoing_params is not None else None,
            )
        )
    return seen


def test_follow_video_switches_with_a_scene_cut() -> None:
    program, presence = SceneProgram(), ProgramPresence()
    (first,) = presences_over(program, presence, two_scenes({"kind": "cut"}), 1)
    assert first == {"in_0": 1.0, "in_1": 0.0}
    (cut,) = presences_over(program, presence, two_scenes({"kind": "cut"}, program="b"), 1)
    assert cut == {"in_0": 0.0, "in_1": 1.0}


@pytest.mark.parametrize("kind", ["fade", "wipe"])
def test_follow_video_crossfades_with_a_scene_transition(kind: str) -> None:
    transition = {"kind": kind, "duration_ms": 300}  # 9 frames at 30 fps
    program, presence = SceneProgram(), ProgramPresence()
    presences_over(program, presence, two_scenes(transition), 2)
    during = presences_over(program, presence, two_scenes(transition, program="b"), 10)
    outgoing = [p["in_0"] for p in during]
    incoming = [p["in_1"] for p in during]
    assert outgoing[:8] == pytest.approx([1 - k / 9 for k in range(1, 9)], abs=1e-5)  # progress has 6 decimals
    assert incoming[:8] == pytest.approx([k / 9 for k in range(1, 9)], abs=1e-5)
    assert during[8] == during[9] == {"in_0": 0.0, "in_1": 1.0}  # the last frame shows the incoming scene alone
    assert all(a + b == pytest.approx(1.0) for a, b in zip(outgoing, incoming, strict=True))


def test_a_transition_from_a_snapshot_fades_out_what_was_heard() -> None:
    presence = ProgramPresence()
    shown = {"in_0": {"opacity": 0.8}, "in_1": {"visible": False}}
    incoming = {"in_0": {"visible": False}, "in_1": {"opacity": 1.0}}
    assert presence.next_frame(shown) == {"in_0": 0.8, "in_1": 0.0}
    middle = presence.next_frame(incoming, transition={"from": None, "to": "b", "frame": 1, "progress": 0.5})
    assert middle == pytest.approx({"in_0": 0.4, "in_1": 0.5})
    later = presence.next_frame(incoming, transition={"from": None, "to": "b", "frame": 2, "progress": 0.75})
    assert later == pytest.approx({"in_0": 0.2, "in_1": 0.75})  # from the presence before the transition, not the last frame's


# ----------------------------------------------------------------------------- output rate and meters


def test_44100_blocks_are_contiguous_and_never_drift_over_many_frames() -> None:
    mixer = CompositorMixer()
    clock = FrameAudio()
    fps = 30
    blocks = []
    slots = 0
    for frame in range(3000):  # 100 s at 30 fps, with a dropped slot now and then
        slots += 2 if frame % 97 == 96 else 1
        clock.next_frame(slots / fps, 1 / fps, 0.0)
        inputs = {"in_0": sine(clock.start, clock.count)}
        block = mixer.mix(clock.start, inputs, {"in_0": InputSettings()}, sample_rate=44100, layout="stereo")
        assert block is not None
        blocks.append(block)
    for before, after in itertools.pairwise(blocks):
        assert after.start_sample == before.end_sample
    assert {b.sample_rate for b in blocks} == {44100}
    assert blocks[-1].end_sample == output_position(clock.end, 44100)
    total = sum(b.count for b in blocks)
    assert total == output_position(clock.end, 44100) - output_position(samples_until(1 / fps), 44100)
    # The content keeps a fixed delay: the 1 kHz sine of the last second lines up with its expected
    # phase as well as the second second's does (a drift of one sample would shift it by 8 degrees).
    out = np.concatenate([b.samples for b in blocks])[:, 0]
    start = blocks[0].start_sample

    def delay_at(offset: int) -> float:
        window = out[offset : offset + 4410]
        k = np.arange(start + offset, start + offset + 4410)
        best = min(range(0, 120), key=lambda d: float(np.sum((window - 0.5 * np.sin(2 * np.pi * 1000 * (k - d) / 44100)) ** 2)))
        return best

    assert delay_at(44100) == delay_at(len(out) - 4410) < 100
    residual = out[-4410:] - 0.5 * np.sin(
        2 * np.pi * 1000 * (np.arange(len(out) - 4410, len(out)) + start - delay_at(44100)) / 44100
    )
    assert np.max(np.abs(residual)) < 0.01


def test_a_change_of_output_format_starts_the_new_one_at_the_same_time() -> None:
    mixer = CompositorMixer()
    first = mixer.mix(0, {"in_0": constant(0.1)}, {}, sample_rate=48000, layout="stereo")
    second = mixer.mix(BLOCK, {"in_0": constant(0.1)}, {}, sample_rate=44100, layout="mono")
    assert first is not None and second is not None
    assert (second.sample_rate, second.channels) == (44100, 1)
    assert second.start_time == pytest.approx(first.end_sample / 48000, abs=1 / 44100)


def test_meters_of_a_known_sine_read_its_peak_and_rms_to_a_tenth_of_a_db() -> None:
    mixer = CompositorMixer()
    amplitude = 10 ** (-12 / 20)
    for frame in range(3):
        inputs = {"in_0": sine(frame * BLOCK, BLOCK, 997.0, amplitude), "in_1": sine(frame * BLOCK, BLOCK, 997.0, amplitude)}
        settings = {"in_0": InputSettings(gain_db=-6.0), "in_1": InputSettings(mute=True)}
        mix_once(mixer, inputs, settings, start=frame * BLOCK)
    reading = mixer.reading(["in_0", "in_1"])
    assert reading is not None
    in_0 = reading["inputs"]["in_0"]
    assert in_0["peak_dbfs"] == pytest.approx([-18.0, -18.0], abs=0.1)
    assert in_0["rms_dbfs"] == pytest.approx([-21.01, -21.01], abs=0.1)  # a sine's RMS is 3.01 dB under its peak
    assert reading["inputs"]["in_1"] == {"peak_dbfs": [FLOOR_DBFS] * 2, "rms_dbfs": [FLOOR_DBFS] * 2}
    assert reading["mix"]["peak_dbfs"] == pytest.approx([-18.0, -18.0], abs=0.1)
    assert (reading["sample_rate"], reading["channels"]) == (48000, "stereo")
    # A reading restarts the meters; an input no longer connected leaves them.
    mix_once(mixer, {"in_0": constant(0.0)}, {}, start=3 * BLOCK)
    again = mixer.reading(["in_0"])
    assert again is not None and set(again["inputs"]) == {"in_0"}
    assert again["mix"]["peak_dbfs"] == [FLOOR_DBFS, FLOOR_DBFS]


def test_level_meter_per_channel_and_floor() -> None:
    meter = LevelMeter(2)
    samples = np.zeros((480, 2), np.float32)
    samples[:, 0] = 1.0
    samples[0, 1] = -0.5
    meter.feed(samples)
    reading = meter.reading()
    assert reading["peak_dbfs"] == [0.0, pytest.approx(-6.02, abs=0.01)]
    assert reading["rms_dbfs"][0] == 0.0
    assert reading["rms_dbfs"][1] == pytest.approx(20 * math.log10(math.sqrt(0.25 / 480)), abs=0.01)
    assert to_dbfs(0.0) == to_dbfs(1e-9) == FLOOR_DBFS


def test_output_format_at_48000_passes_the_mix_through() -> None:
    fmt = OutputFormat(48000, "stereo")
    mix = sine(0, BLOCK)
    block = fmt.convert(mix, 4800)
    assert block.start_sample == 4800 and block.samples is mix


# ----------------------------------------------------------------------------- the loop's audio clock


def test_frame_blocks_are_contiguous_across_dropped_slots_and_fps_changes() -> None:
    clock = FrameAudio()
    clock.next_frame(0.0, 1 / 30, 0.0)
    assert (clock.start, clock.end) == (0, 1600)
    clock.next_frame(2 / 30, 1 / 30, 0.0)  # slot 1 was dropped: its sound rides with this frame
    assert (clock.start, clock.end) == (1600, 4800)
    clock.next_frame(3 / 30, 1 / 60, 0.0)  # the rate changed to 60 fps at slot 3
    assert (clock.start, clock.end) == (4800, 5600)
    clock.next_frame(3 / 30 + 1 / 60, 1 / 60, 0.0)
    assert (clock.start, clock.end) == (5600, 6400)


class Silent:
    """A source with sound whose producer never writes: a stalled input."""

    def __init__(self) -> None:
        self.audio = AudioBuffer()


class RecordingBuffer(AudioBuffer):
    def __init__(self) -> None:
        super().__init__()
        self.reads: list[tuple[int, float | None]] = []

    def read(self, count: int, at: float | None = None) -> np.ndarray:
        self.reads.append((count, at))
        return super().read(count, at)


class Timed:
    def __init__(self) -> None:
        self.audio = RecordingBuffer()
        self.asked: list[float] = []

    def audio_time(self, t: float) -> float:
        self.asked.append(t)
        return 10.0 + t


def test_a_stalled_input_is_silence_of_the_frame_length_at_once() -> None:
    clock = FrameAudio()
    clock.next_frame(1.0, 1 / 30, 0.0)
    source = Silent()
    block = clock.of_source("mic", source)
    assert block is not None and block.shape == (1600, 2) and not block.any()
    assert source.audio.underrun_samples == 1600
    assert clock.of_source("bars", object()) is None  # no `audio`: no sound


def test_a_source_is_read_once_per_frame_whoever_asks() -> None:
    clock = FrameAudio()
    clock.next_frame(0.0, 1 / 30, 0.0)
    source = Silent()
    source.audio.write(constant(0.3, 3200))
    first = clock.of_source("mic", source)
    again = clock.of_source("mic", source)
    assert first is again
    assert source.audio.buffered_s == pytest.approx(1600 / 48000)


def test_a_timed_source_is_read_at_its_play_clock_time_less_the_dropped_slots() -> None:
    clock = FrameAudio()
    clock.next_frame(0.0, 1 / 30, 0.5)
    source = Timed()
    source.audio.write(constant(0.25, 48000), at=9.0)
    clock.of_source("file", source)
    clock.next_frame(3 / 30, 1 / 30, 0.6)  # slots 1 and 2 dropped
    clock.of_source("file", source)
    assert source.asked == [0.5, 0.6]
    (first_count, first_at), (second_count, second_at) = source.audio.reads
    lag = PICTURE_LAG_PERIODS / 30  # the picture an output frame shows was due half a period earlier, on average
    assert first_count == 1600 and first_at == pytest.approx(10.5 - lag)
    assert second_count == 4800  # slots 1 and 2 were dropped: this block has their sound too
    assert second_at == pytest.approx(10.6 - 1 / 15 - lag)  # frame(t) shows slot 3; the block starts two slots earlier
    assert source.audio.resyncs == 0  # which is where the last read ended: no jump


@pytest.mark.parametrize("rate", [48000, 44100])
def test_a_frame_that_mixed_nothing_is_filled_with_silence_and_a_long_pause_starts_afresh(rate: int) -> None:
    mixer = CompositorMixer()
    settings = {"in_0": InputSettings()}
    first = mixer.mix(0, {"in_0": constant(0.5)}, settings, sample_rate=rate, layout="stereo")
    # The frame at 1600 mixed nothing (its picture failed before its sound, or no input had sound).
    third = mixer.mix(3200, {"in_0": constant(0.5)}, settings, sample_rate=rate, layout="stereo")
    assert first is not None and third is not None
    assert third.start_sample == first.end_sample
    missing = output_position(3200, rate) - first.end_sample
    assert third.count == missing + output_position(4800, rate) - output_position(3200, rate)
    if rate == 48000:
        assert not third.samples[:1600].any() and np.allclose(third.samples[1600:], 0.5)
    # More than a second without sound: a new run of blocks, where the clock says.
    later = mixer.mix(200_000, {"in_0": constant(0.5)}, settings, sample_rate=rate, layout="stereo")
    assert later is not None and later.start_sample == output_position(200_000, rate)


@pytest.mark.parametrize(
    ("kind", "position", "expected"),
    [
        ("fade", 0.0, (1.0, 0.0)),
        ("fade", 0.25, (0.75, 0.25)),
        ("fade", 1.0, (0.0, 1.0)),
        ("cut", 0.3, (1.0, 0.0)),
        ("cut", 0.7, (0.0, 1.0)),
    ],
)
def test_follow_video_follows_a_held_t_bar(kind: str, position: float, expected: tuple[float, float]) -> None:
    full = two_scenes({"kind": kind, "duration_ms": 300})
    full = {**full, "preview_scene": "b", "transition_position": position}
    program, presence = SceneProgram(), ProgramPresence()
    presences_over(program, presence, two_scenes({"kind": kind, "duration_ms": 300}), 1)  # a first frame without the bar
    (held,) = presences_over(program, presence, full, 1)
    assert (held["in_0"], held["in_1"]) == pytest.approx(expected, abs=1e-6)
