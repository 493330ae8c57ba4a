"""daemon/engine/audio/push.py: pushed PCM converted to the bus format on the node's own thread, placed in
time by its pts_us (gaps filled, overlaps cut, restarts followed), bounded, and the audio::push source over it."""

from __future__ import annotations

import time

import numpy as np
import pytest

from compositord.daemon.engine.api import PushedAudio
from compositord.daemon.engine.audio.bus import BUS_SAMPLE_RATE
from compositord.daemon.engine.audio.push import CAPACITY_S, MAX_PENDING_BYTES, PushedAudioInlet, to_bus_layout
from compositord.daemon.engine.sources.audio_push import AudioPushSource
from compositord.daemon.engine.sources.push import PushInlets
from compositord.protocol import budget, params, pcm
from compositord.protocol.errors import RemoteProtocolError


def sine(frequency: float, rate: int, count: int, amplitude: float = 0.5, start: int = 0) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * frequency * (np.arange(count) + start) / rate)


def s16(samples: np.ndarray) -> bytes:
    return np.round(samples * 32767).astype("<i2").tobytes()


def wait_until(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def push_sine(
    inlet: PushedAudioInlet, rate: int, seconds: float, *, chunk_ms: int = 10, frequency: float = 1000.0, first_pts: int = 0
) -> int:
    """Mono s16 chunks with consecutive pts; the messages sent."""
    chunk = rate * chunk_ms // 1000
    total = round(rate * seconds)
    sent = 0
    for start in range(0, total, chunk):
        count = min(chunk, total - start)
        pts = first_pts + round(start * 1_000_000 / rate)
        inlet.put(PushedAudio("mic", "s16le", 1, rate, pts, s16(sine(frequency, rate, count, start=start))))
        sent += 1
    return sent


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    windowed = samples * np.hanning(samples.shape[0])
    spectrum = np.abs(np.fft.rfft(windowed))
    return float(np.argmax(spectrum) * rate / samples.shape[0])


def test_the_header_rates_and_the_params_rates_are_one_list() -> None:
    assert params.PUSHED_AUDIO_RATES == pcm.SAMPLE_RATES


def test_pcm_formats_become_bus_layout_exactly() -> None:
    stereo = to_bus_layout(np.array([[-32768, 16384], [32767, 0]], "<i2").tobytes(), "s16le", 2)
    assert stereo.dtype == np.float32 and stereo.shape == (2, 2)
    assert stereo.tolist() == [[-1.0, 0.5], [32767 / 32768, 0.0]]
    mono = to_bus_layout(np.array([2**30, -(2**31)], "<i4").tobytes(), "s32le", 1)
    assert mono.tolist() == [[0.5, 0.5], [-1.0, -1.0]]  # mono at its level on both channels
    floats = to_bus_layout(np.array([0.25, np.nan, 3.0, -np.inf], "<f4").tobytes(), "f32le", 1)
    assert floats[:, 0].tolist() == [0.25, 0.0, 1.0, 0.0]  # NaN and infinities are silence, the rest clipped


@pytest.mark.parametrize("rate", [44100, 48000, 16000])
def test_a_pushed_sine_arrives_at_the_bus_rate_with_its_frequency(rate: int) -> None:
    inlet = PushedAudioInlet("mic", latency_ms=0)
    try:
        sent = push_sine(inlet, rate, 1.0)
        wait_until(lambda: inlet.messages_received == sent)
        stats = inlet.stats()
        assert stats["samples_received"] == rate
        # One second pushed is one second on the bus, less the resampler's filter delay (a few dozen samples).
        assert BUS_SAMPLE_RATE - 100 <= stats["bus_samples"] <= BUS_SAMPLE_RATE
        assert stats["gaps"] == stats["overlaps"] == stats["discontinuities"] == stats["messages_dropped"] == 0
        assert stats["input"] == {"sample_format": "s16le", "channels": 1, "sample_rate": rate}
        sound = inlet.buffer.read(stats["bus_samples"])
        assert dominant_hz(sound[:, 0], BUS_SAMPLE_RATE) == pytest.approx(1000.0, abs=2.0)
        assert np.array_equal(sound[:, 0], sound[:, 1])
        # -6 dBFS in, -6 dBFS measured (peak; RMS of a sine is 3 dB under its peak).
        assert stats["level"]["peak_dbfs"] == pytest.approx([-6.02, -6.02], abs=0.05)
        assert stats["level"]["rms_dbfs"] == pytest.approx([-9.03, -9.03], abs=0.05)
        assert inlet.stats()["level"]["peak_dbfs"] == [-120.0, -120.0]  # nothing since: the floor, not -inf
    finally:
        inlet.close(5.0)


def test_a_gap_in_pts_is_filled_with_silence_of_its_length() -> None:
    inlet = PushedAudioInlet("mic", latency_ms=0)
    try:
        tone = s16(sine(1000, 48000, 480))
        inlet.put(PushedAudio("mic", "s16le", 1, 48000, 0, tone))
        inlet.put(PushedAudio("mic", "s16le", 1, 48000, 10_000 + 50_000, tone))  # 50 ms skipped
        wait_until(lambda: inlet.messages_received == 2)
        stats = inlet.stats()
        assert (stats["gaps"], stats["gap_ms"]) == (1, 50.0)
        sound = inlet.buffer.read(480 + 2400 + 480)[:, 0]
        assert np.abs(sound[:480]).max() > 0.4
        assert np.abs(sound[480 : 480 + 2400]).max() == 0.0
        assert np.abs(sound[2880:]).max() > 0.4
        # Jitter under 5 ms is not a gap: the sound runs on by sample count.
        inlet.put(PushedAudio("mic", "s16le", 1, 48000, 70_000 + 3_000, tone))
        wait_until(lambda: inlet.messages_received == 3)
        assert inlet.stats()["gaps"] == 1 and inlet.buffer.buffered_s == pytest.approx(0.01)
    finally:
        inlet.close(5.0)


def test_sound_already_played_is_cut_and_a_restarted_clock_is_followed() -> None:
    inlet = PushedAudioInlet("mic", latency_ms=0)
    try:
        first = np.full(480, 0.25)
        inlet.put(PushedAudio("mic", "s16le", 1, 48000, 1_000_000, s16(first)))
        inlet.put(PushedAudio("mic", "s16le", 1, 48000, 1_000_000, s16(first)))  # sent twice: wholly in the past
        inlet.put(PushedAudio("mic", "s16le", 1, 48000, 1_005_000 - 1, s16(np.full(480, 0.5))))  # half of it played
        inlet.put(PushedAudio("mic", "s16le", 1, 48000, 0, s16(np.full(48, 0.75))))  # the client's clock restarted
        wait_until(lambda: inlet.messages_received == 4)
        stats = inlet.stats()
        assert (stats["late_messages"], stats["overlaps"], stats["discontinuities"]) == (1, 1, 1)
        sound = inlet.buffer.read(2000)[:, 0]
        assert sound[:480] == pytest.approx(np.full(480, 0.25), abs=1e-4)
        assert sound[480:720] == pytest.approx(np.full(240, 0.5), abs=1e-4)  # the second half only
        assert sound[720:768] == pytest.approx(np.full(48, 0.75), abs=1e-4)
        assert np.abs(sound[768:]).max() == 0.0
    finally:
        inlet.close(5.0)


def test_latency_is_silence_ahead_of_the_first_sound_and_after_the_buffer_ran_dry() -> None:
    inlet = PushedAudioInlet("mic", latency_ms=40)
    try:
        inlet.put(PushedAudio("mic", "f32le", 2, 48000, 0, np.full((480, 2), 0.5, "<f4").tobytes()))
        wait_until(lambda: inlet.messages_received == 1)
        sound = inlet.buffer.read(1920 + 480)
        assert np.abs(sound[:1920]).max() == 0.0 and sound[1920:] == pytest.approx(np.full((480, 2), 0.5))
        inlet.put(PushedAudio("mic", "f32le", 2, 48000, 10_000, np.full((480, 2), 0.5, "<f4").tobytes()))
        wait_until(lambda: inlet.messages_received == 2)
        assert inlet.stats()["primes"] == 2 and inlet.buffer.buffered_s == pytest.approx(0.05)
    finally:
        inlet.close(5.0)


def test_what_waits_for_the_converter_is_bounded_and_drops_are_counted() -> None:
    inlet = PushedAudioInlet("mic", max_pending_bytes=1000)
    try:
        assert not inlet.put(PushedAudio("mic", "s16le", 1, 48000, 0, bytes(1002)))  # over the bound by itself
        assert inlet.put(PushedAudio("mic", "s16le", 1, 48000, 0, bytes(960)))
        wait_until(lambda: inlet.messages_received == 1)
        stats = inlet.stats()
        assert (stats["messages_dropped"], stats["pending_bytes"], stats["samples_received"]) == (1, 0, 480)
    finally:
        inlet.close(5.0)
    assert not inlet.put(PushedAudio("mic", "s16le", 1, 48000, 10_000, bytes(960)))  # closed: dropped
    assert inlet.stats()["messages_dropped"] == 2


def test_the_source_has_no_picture_and_its_audio_is_the_inlets_buffer() -> None:
    inlets = PushInlets()
    try:
        source = AudioPushSource(params.with_defaults("audio::push", {}), inlets.audio("mic"))
        assert source.frame(0.0) is None
        inlet = inlets.existing_audio("mic")
        assert inlet is not None and source.audio is inlet.buffer
        inlet.put(PushedAudio("mic", "s16le", 2, 48000, 0, bytes(480 * 4)))
        wait_until(lambda: source.stats()["messages_received"] == 1)
        source.configure({"latency_ms": 200})  # a new latency: a new buffer with its own backlog bound
        assert source.audio is inlet.buffer and source.audio.buffered_s == 0
        inlets.retain([])
        assert inlets.existing_audio("mic") is None
    finally:
        inlets.close(5.0)
    assert inlets.audio("mic") is None  # after the loop ended, pushed audio has nowhere to go


def test_audio_push_params_are_checked_naming_the_field() -> None:
    assert params.validate("audio::push", {"sample_rate": 44100, "channels": 2, "latency_ms": 0}) == {
        "sample_rate": 44100,
        "channels": 2,
        "latency_ms": 0,
    }
    assert params.with_defaults("audio::push", {}) == {"sample_rate": None, "channels": None, "latency_ms": 50}
    with pytest.raises(RemoteProtocolError) as caught:
        params.validate("audio::push", {"sample_rate": 44000, "channels": 3, "latency_ms": 1001})
    found = {error.path: error.message for error in caught.value.errors}
    assert set(found) == {"/sample_rate", "/channels", "/latency_ms"}
    assert "must be one of 8000" in found["/sample_rate"] and "got 44000" in found["/sample_rate"]
    assert params.output_pins("audio::push") == ("out",) and params.role("audio::push") == "source"


def test_a_sound_source_costs_its_buffers_and_no_texture() -> None:
    pipeline = params.validate_pipeline(
        {
            "nodes": {
                "mic": {"kind": "audio::push", "params": {}},
                "comp": {"kind": "video::compositor", "params": {"width": 64, "height": 32}},
            },
            "connections": [{"from_node": "mic", "from_pin": "out", "to_node": "comp", "to_pin": "in_0"}],
        }
    )
    cost = budget.session_cost(pipeline)
    sound = [item for item in cost.items if item.pointer == "/nodes/mic/params"]
    assert [item.bytes for item in sound] == [budget.AUDIO_SOURCE_BYTES]  # no texture for the compositor
    # The fixed cost covers what the engine holds per node: the buffer and what waits for the converter.
    bus_buffer = round(CAPACITY_S * BUS_SAMPLE_RATE) * 2 * 4
    assert bus_buffer + MAX_PENDING_BYTES <= budget.AUDIO_SOURCE_BYTES
    limits = budget.BudgetLimits(cost.bytes - 1, 2**40, 16, 10**12)
    without = params.validate_pipeline({"nodes": {"comp": pipeline["nodes"]["comp"]}, "connections": []})
    with pytest.raises(RemoteProtocolError) as caught:
        budget.check_session(pipeline, limits=limits, previous=budget.session_cost(without))
    assert caught.value.path == "/nodes/mic/params"
    assert "its cost is fixed: remove the node or reduce the rest" in str(caught.value)


async def test_audio_waiting_for_an_engine_process_is_bounded_and_never_looks_like_a_hang() -> None:
    """Nothing reads this engine's socket (it never started): audio past the in-flight bounds is dropped
    and counted, and the command queue, whose overflow means a hung engine, is not filled by it."""
    from compositord.daemon.control import engine_client
    from compositord.daemon.engine import wire
    from compositord.daemon.state.model import SessionRecord
    from compositord.tests.engine_recorder import EventRecorder

    process = engine_client.EngineProcess(
        wire.EngineConfig(SessionRecord("s", "s", {}, []), "/nonexistent", None), EventRecorder()
    )
    try:
        small = PushedAudio("mic", "s16le", 1, 48000, 0, memoryview(bytes(96)))
        for _ in range(engine_client.AUDIO_IN_FLIGHT_MESSAGES + 40):
            process.push_audio(small)
        assert process.audio_not_pushed == 40 and process.trouble is None
        large = PushedAudio("mic", "f32le", 2, 96000, 0, bytes(19200 * 8))
        fresh = engine_client.EngineProcess(
            wire.EngineConfig(SessionRecord("t", "t", {}, []), "/nonexistent", None), EventRecorder()
        )
        for _ in range(100):
            fresh.push_audio(large)
        assert fresh.audio_not_pushed == 100 - engine_client.AUDIO_IN_FLIGHT_BYTES // (19200 * 8)
        assert fresh.trouble is None
    finally:
        process.kill()


def test_the_audio_budget_is_a_setting_that_reaches_each_connection() -> None:
    from compositord.daemon.config import Limits, Settings, SettingsError

    limits = Limits.from_environ({"COMPOSITORD_MAX_AUDIO_BYTES_PER_SECOND": "1M"})
    assert Settings(limits=limits).server_options().limits.audio_bytes_per_second == 1 << 20
    assert Settings().server_options().limits.audio_bytes_per_second == 2 << 20
    with pytest.raises(SettingsError, match="max_audio_bytes_per_second"):
        Limits(max_audio_bytes_per_second=0)
