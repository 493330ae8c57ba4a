"""Sound through the render loop (llvmpipe): a compositor with an audio::tone input hands its sinks
contiguous blocks of the tone's exact samples, through dropped slots and fps changes; a stalled input is
silence and never delays the picture; no sound is audio=None; meters arrive in the compositor's stats at 10 Hz."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio

from compositord.daemon.engine import api, registry
from compositord.daemon.engine.audio.buffer import AudioBuffer
from compositord.daemon.engine.audio.bus import samples_until
from compositord.daemon.engine.render.frames import SourceFrame
from compositord.daemon.engine.sinks.base import ErrorLatch, Sink, SinkFrame
from compositord.daemon.state.model import ConnectionRecord, NodeRecord, SessionRecord
from compositord.tests.sink_helpers import running_loop, wait_until

pytestmark = pytest.mark.gl

W, H = 64, 36
TONE = {"frequency_hz": 997.0, "level_dbfs": -6.0}


class CapturingSink(Sink):
    """Keeps every SinkFrame it is handed (a queue deep enough that none is dropped at these rates)."""

    kind = "test::capture"
    queue_capacity = 256

    def __init__(self, node_id: str, params: Mapping[str, Any], latch: ErrorLatch, predecessor: Sink | None) -> None:
        super().__init__(node_id, params, latch, predecessor)
        self.items: list[SinkFrame] = []
        self._lock = threading.Lock()

    def open(self, first: SinkFrame) -> None:
        pass

    def write(self, item: SinkFrame) -> None:
        with self._lock:
            self.items.append(item)

    def captured(self) -> list[SinkFrame]:
        with self._lock:
            return list(self.items)


class PacedSource:
    """A small picture that takes ``delays[0]`` seconds to make (to make the loop drop slots on demand)."""

    def __init__(self, delays: list[float]) -> None:
        self._delays = delays
        self._frame = SourceFrame("rgba8", 16, 16, bytes(16 * 16 * 4), 1)

    def configure(self, params: Mapping[str, Any]) -> None:
        pass

    def frame(self, t: float = 0.0) -> SourceFrame:
        if self._delays[0]:
            time.sleep(self._delays[0])
        return self._frame


class StalledMicrophone:
    """A source with sound whose producer never writes (a stalled network input)."""

    def __init__(self) -> None:
        self.audio = AudioBuffer()
        self._frame = SourceFrame("rgba8", 16, 16, bytes(16 * 16 * 4), 1)

    def configure(self, params: Mapping[str, Any]) -> None:
        pass

    def frame(self, t: float = 0.0) -> SourceFrame:
        return self._frame


@pytest.fixture(autouse=True)
def test_kinds(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    delays = [0.0]
    monkeypatch.setitem(
        registry.IMPLEMENTATIONS,
        "sink::y4m",  # its params schema ({"path"}) serves; the engine makes a capturing sink instead
        registry.SinkKind(
            lambda node_id, params, latch, predecessor, context: CapturingSink(node_id, params, latch, predecessor)
        ),
    )
    monkeypatch.setitem(
        registry.IMPLEMENTATIONS,
        "test::paced",
        registry.SourceKind(lambda params, context: PacedSource(delays), standalone=False),
    )
    monkeypatch.setitem(
        registry.IMPLEMENTATIONS,
        "test::stalled",
        registry.SourceKind(lambda params, context: StalledMicrophone(), standalone=False),
    )
    return delays


def session(
    *, fps: int = 60, tone: bool = True, extra: Mapping[str, str] | None = None, comp: Mapping[str, Any] | None = None
) -> SessionRecord:
    """paced -> in_0, tone -> in_1 (when ``tone``), ``extra`` {node kind -> pin}; comp -> capture."""
    nodes = {
        "paced": NodeRecord("paced", "test::paced", {}),
        "comp": NodeRecord("comp", "video::compositor", {"width": W, "height": H, "fps": fps, "num_inputs": 3, **(comp or {})}),
        "capture": NodeRecord("capture", "sink::y4m", {"path": "-"}),
    }
    connections = [ConnectionRecord("paced", "out", "comp", "in_0"), ConnectionRecord("comp", "out", "capture", "in")]
    if tone:
        nodes["tone"] = NodeRecord("tone", "audio::tone", TONE)
        connections.append(ConnectionRecord("tone", "out", "comp", "in_1"))
    for kind, pin in (extra or {}).items():
        node_id = kind.split("::")[1]
        nodes[node_id] = NodeRecord(node_id, kind, {})
        connections.append(ConnectionRecord(node_id, "out", "comp", pin))
    return SessionRecord("s1", "audio", nodes, connections)


def expected_tone(start: int, count: int) -> np.ndarray:
    k = np.arange(start, start + count, dtype=np.float64)
    return 10 ** (TONE["level_dbfs"] / 20) * np.sin(2 * np.pi * TONE["frequency_hz"] * k / 48000)


def assert_contiguous_tone(items: list[SinkFrame]) -> None:
    """Every frame has a block; each starts where the one before ended and ends at the frame's slot end;
    together they are the tone's exact samples."""
    for before, after in itertools.pairwise(items):
        assert before.audio is not None and after.audio is not None
        assert after.audio.start_sample == before.audio.end_sample, (before.media_time, after.media_time)
    for item in items:
        assert item.audio is not None and (item.audio.sample_rate, item.audio.channels) == (48000, 2)
        assert item.audio.end_sample == samples_until(item.media_time + 1 / item.fps)
    samples = np.concatenate([item.audio.samples for item in items if item.audio is not None])
    start = items[0].audio.start_sample if items[0].audio is not None else 0
    assert np.max(np.abs(samples[:, 0] - expected_tone(start, samples.shape[0]))) < 1e-6
    assert np.array_equal(samples[:, 0], samples[:, 1])


def capture_of(loop: Any) -> CapturingSink:
    sink = loop.sink("capture")
    assert isinstance(sink, CapturingSink)
    return sink


async def test_a_tone_reaches_the_sink_as_contiguous_blocks_through_dropped_slots_and_an_fps_change(
    tmp_path: Path, test_kinds: list[float]
) -> None:
    async with running_loop(session(fps=60), tmp_path) as (loop, _recorder):
        sink = capture_of(loop)
        await wait_until(lambda: len(sink.captured()) >= 30)
        first = sink.captured()[0]
        assert first.audio is not None and first.audio.start_sample == samples_until(first.media_time)
        # Frames that take 2.5 periods: slots are dropped, and their sound rides with the next frame.
        test_kinds[0] = 2.5 / 60
        dropped_before = loop.statistics().frames_dropped
        await wait_until(lambda: loop.statistics().frames_dropped >= dropped_before + 10)
        test_kinds[0] = 0.0
        # A new rate starts a new schedule of slots.
        loop.submit(api.ParamsUpdate("comp", {"width": W, "height": H, "fps": 25, "num_inputs": 3}, None))
        await wait_until(lambda: sum(1 for item in sink.captured() if item.fps == 25) >= 10)
        items = sink.captured()
    gaps = [after.media_time - before.media_time for before, after in itertools.pairwise(items)]
    assert max(gaps) > 1.5 / 60  # slots were dropped ...
    assert {item.fps for item in items} == {60, 25}  # ... and the rate changed
    assert_contiguous_tone(items)  # ... and the sound never had a gap or an overlap


async def test_a_stalled_input_is_silence_and_never_delays_the_picture(tmp_path: Path) -> None:
    async with running_loop(session(fps=60, extra={"test::stalled": "in_2"}), tmp_path) as (loop, recorder):
        sink = capture_of(loop)
        await wait_until(lambda: len(sink.captured()) >= 90)
        stats = loop.statistics()
        items = sink.captured()
        await wait_until(lambda: any("in_2" in e.stats.get("audio", {}).get("inputs", {}) for e in recorder.stats))
    # The picture kept its pace: a stalled producer costs no frame.
    assert stats.frames_late <= stats.frames_rendered // 10, stats
    assert_contiguous_tone(items)  # the stalled input added silence, nothing else
    meters = [e.stats["audio"] for e in recorder.stats if e.node_id == "comp" and "audio" in e.stats]
    assert meters[-1]["inputs"]["in_2"] == {"peak_dbfs": [-120.0, -120.0], "rms_dbfs": [-120.0, -120.0]}


@pytest.mark.parametrize(
    "tone, comp",
    [(False, None), (True, {"audio": {"enabled": False}})],
    ids=["no-input-has-sound", "audio-disabled"],
)
async def test_without_sound_the_sink_gets_audio_none(tmp_path: Path, tone: bool, comp: dict[str, Any] | None) -> None:
    async with running_loop(session(tone=tone, comp=comp), tmp_path) as (loop, recorder):
        sink = capture_of(loop)
        await wait_until(lambda: len(sink.captured()) >= 10)
        items = sink.captured()
        await trio.sleep(0.3)
    assert all(item.audio is None for item in items)
    assert not any("audio" in e.stats for e in recorder.stats if e.node_id == "comp")


async def test_meters_arrive_in_the_compositors_stats_at_10_hz_and_follow_a_tune(tmp_path: Path) -> None:
    base = {"width": W, "height": H, "fps": 60, "num_inputs": 3}
    async with running_loop(session(fps=60), tmp_path) as (loop, recorder):

        def meters() -> list[dict[str, Any]]:
            return [e.stats["audio"] for e in recorder.stats if e.node_id == "comp" and "audio" in e.stats]

        await wait_until(lambda: meters())
        count, started = len(meters()), time.monotonic()
        await trio.sleep(1.0)
        rate = (len(meters()) - count) / (time.monotonic() - started)
        latest = meters()[-1]
        assert latest["inputs"]["in_1"]["peak_dbfs"] == pytest.approx([-6.0, -6.0], abs=0.1)
        assert latest["mix"]["rms_dbfs"] == pytest.approx([-9.01, -9.01], abs=0.1)
        assert set(latest["inputs"]) == {"in_1"}  # in_0's source has no sound
        loop.submit(api.ParamsUpdate("comp", {**base, "layers": {"in_1": {"audio": {"gain_db": -12.0}}}}, None))
        await wait_until(lambda: meters()[-1]["inputs"]["in_1"]["peak_dbfs"][0] == pytest.approx(-18.0, abs=0.1))
        loop.submit(api.ParamsUpdate("comp", {**base, "layers": {"in_1": {"audio": {"mute": True}}}}, None))
        await wait_until(lambda: meters()[-1]["mix"]["peak_dbfs"] == [-120.0, -120.0])
    assert 6 <= rate <= 11, rate  # 10 a second; fewer only when the loop itself is late (a loaded machine)
    full = [e.stats for e in recorder.stats if e.node_id == "comp" and "audio" in e.stats][-1]
    assert {"frames_rendered", "fps", "render_ms_p50", "audio_mix_ms_p50"} <= set(full)


async def test_a_nested_compositor_hears_the_inner_compositors_mix(tmp_path: Path) -> None:
    nodes = {
        "tone": NodeRecord("tone", "audio::tone", TONE),
        "inner": NodeRecord(
            "inner",
            "video::compositor",
            {"width": W, "height": H, "fps": 60, "layers": {"in_0": {"audio": {"gain_db": -6.0}}}},
        ),
        "outer": NodeRecord("outer", "video::compositor", {"width": W, "height": H, "fps": 60}),
        "capture": NodeRecord("capture", "sink::y4m", {"path": "-"}),
    }
    connections = [
        ConnectionRecord("tone", "out", "inner", "in_0"),
        ConnectionRecord("inner", "out", "outer", "in_0"),
        ConnectionRecord("outer", "out", "capture", "in"),
    ]
    async with running_loop(SessionRecord("s1", "nested", nodes, connections), tmp_path) as (loop, _recorder):
        sink = capture_of(loop)
        await wait_until(lambda: len(sink.captured()) >= 20)
        items = sink.captured()
    blocks = [item.audio for item in items]
    assert all(block is not None for block in blocks)
    samples = np.concatenate([block.samples for block in blocks if block is not None])
    start = blocks[0].start_sample if blocks[0] is not None else 0
    half = 10 ** (-6 / 20)  # the inner compositor's gain, heard through the outer one at 0 dB
    assert np.max(np.abs(samples[:, 0] - half * expected_tone(start, samples.shape[0]))) < 1e-6
