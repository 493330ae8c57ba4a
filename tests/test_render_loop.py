"""The render loop on real llvmpipe, with small canvases at high frame rates:
first frame, S4 view data (stamped and server-caused), batches in one frame,
pacing without catch-up, clean stop, GL only on the render thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import trio

from compositord.daemon.engine import api, registry
from compositord.daemon.engine.loop import RenderLoop
from compositord.daemon.engine.render import gl_context
from compositord.daemon.engine.render import renderer as renderer_module
from compositord.daemon.engine.render.frames import SourceFrame
from compositord.daemon.state.model import ConnectionRecord, NodeRecord, SessionRecord
from compositord.protocol.causal import Stamp
from compositord.protocol.layout import auto_pip_rect
from compositord.tests.engine_recorder import EventRecorder as Recorder
from compositord.tests.sink_helpers import wait_until

pytestmark = pytest.mark.gl

W, H = 160, 90


def make_session(fps: int = 120, comp_params: dict[str, Any] | None = None) -> SessionRecord:
    return SessionRecord(
        "s1",
        "test",
        {
            "bars": NodeRecord("bars", "video::colorbars", {"width": W, "height": H}),
            "comp": NodeRecord("comp", "video::compositor", comp_params or {"width": W, "height": H, "fps": fps}),
        },
        [ConnectionRecord("bars", "out", "comp", "in_0")],
    )


def layer(emission: api.ViewData, pin: str) -> dict[str, Any]:
    (entry,) = [item for item in emission.layout["layers"] if item["id"] == pin]
    return entry


async def test_first_frame_brings_unstamped_view_data_and_an_output(start_loop: Callable[..., Any]) -> None:
    recorder = Recorder()
    loop = await start_loop(make_session(), recorder)
    await wait_until(lambda: recorder.views)
    first = recorder.views[0]
    assert (first.session_id, first.node_id, first.stamp, first.acks, first.seq) == ("s1", "comp", None, {}, 1)
    assert (first.layout["canvas_width"], first.layout["canvas_height"]) == (W, H)
    assert layer(first, "in_0") == {"id": "in_0", "x": 0, "y": 0, "width": W, "height": H, "source_width": W, "source_height": H}
    output = loop.latest_output("comp")
    assert output is not None and (output.width, output.height, len(output.data)) == (W, H, W * H * 4)
    # Nothing changes: the layout is emitted once, not every frame.
    frames_then = loop.statistics().frames_rendered
    await wait_until(lambda: loop.statistics().frames_rendered >= frames_then + 10)
    assert len(recorder.views) == 1
    assert loop.last_progress() > time.monotonic() - 1.0
    assert recorder.started == [api.Started("s1")] and recorder.failed == []
    assert recorder.frames_ended > 0  # FrameEnded after every frame (coalesced when trio is slower)


async def test_stamped_update_yields_view_data_with_its_stamp_and_acks(start_loop: Callable[..., Any]) -> None:
    recorder = Recorder()
    loop = await start_loop(make_session(), recorder)
    await wait_until(lambda: recorder.views)
    rect = {"x": 10, "y": 5, "width": 80, "height": 45}
    params = {"width": W, "height": H, "fps": 120, "layers": {"in_0": {"rect": rect}}}
    loop.submit(api.ParamsUpdate("comp", params, Stamp("alice", 1)))
    await wait_until(lambda: len(recorder.views) >= 2)
    emission = recorder.views[1]
    assert emission.stamp == Stamp("alice", 1)
    assert emission.acks == {"alice": 1}
    assert emission.seq == 2
    assert {k: layer(emission, "in_0")[k] for k in rect} == rect

    # Same layout, new stamp: still emitted, so the sender gets its acknowledgement.
    loop.submit(api.ParamsUpdate("comp", params, Stamp("alice", 2)))
    loop.submit(api.ParamsUpdate("comp", params, Stamp("bob", 7)))
    await wait_until(lambda: len(recorder.views) >= 3)
    assert recorder.views[2].layout == emission.layout
    assert recorder.views[2].stamp == Stamp("bob", 7)  # the last stamped update of the frame
    assert recorder.views[2].acks == {"alice": 2, "bob": 7}

    # S5: a closed connection leaves the acks; the next emission (server-caused) has no stamp.
    loop.submit(api.ForgetSender("alice"))
    loop.submit(api.ParamsUpdate("comp", {"width": W, "height": H, "fps": 120}, None))
    await wait_until(lambda: len(recorder.views) >= 4)
    assert (recorder.views[3].stamp, recorder.views[3].acks) == (None, {"bob": 7})
    assert [v.seq for v in recorder.views] == [1, 2, 3, 4]


async def test_input_added_yields_unstamped_view_data_with_auto_pip(start_loop: Callable[..., Any]) -> None:
    recorder = Recorder()
    session = make_session()
    loop = await start_loop(session, recorder)
    await wait_until(lambda: recorder.views)
    loop.submit(api.ParamsUpdate("comp", {"width": W, "height": H, "fps": 120}, Stamp("alice", 1)))
    await wait_until(lambda: len(recorder.views) >= 2)

    session.nodes["pip"] = NodeRecord("pip", "video::colorbars", {"width": 64, "height": 48, "pattern": "ramp"})
    session.connections.append(ConnectionRecord("pip", "out", "comp", "in_1"))
    loop.submit(api.TopologyUpdate(session))
    await wait_until(lambda: len(recorder.views) >= 3)
    emission = recorder.views[2]
    assert emission.stamp is None  # server-caused: never the stale stamp of alice's edit
    assert emission.acks == {"alice": 1}
    expected = auto_pip_rect(1, W, H, 64, 48)
    pip = layer(emission, "in_1")
    assert (pip["source_width"], pip["source_height"]) == (64, 48)
    for key in ("x", "y", "width", "height"):
        assert pip[key] == pytest.approx(getattr(expected, key), abs=1)
    assert [item["id"] for item in emission.layout["layers"]] == ["in_0", "in_1"]


async def test_a_batch_lands_in_one_frame(start_loop: Callable[..., Any]) -> None:
    recorder = Recorder()
    session = make_session(fps=240)
    session.nodes["pip"] = NodeRecord("pip", "video::colorbars", {"width": 160, "height": 90})
    session.connections.append(ConnectionRecord("pip", "out", "comp", "in_1"))
    loop = await start_loop(session, recorder)
    # Two consistent states; a frame that took half of a batch would show a third geometry.
    state_a = ({"x": 0, "y": 0, "width": 160, "height": 90}, {"width": 160, "height": 90})
    state_b = ({"x": 10, "y": 10, "width": 40, "height": 30}, {"width": 80, "height": 60})
    allowed = [
        {**state_a[0], "source_width": 160, "source_height": 90},
        {**state_b[0], "source_width": 80, "source_height": 60},
    ]
    rev = 0
    for round_number in range(30):
        rect, pip_size = state_b if round_number % 2 == 0 else state_a
        rev += 1
        loop.submit(
            api.BatchUpdate(
                (
                    api.ParamsUpdate(
                        "comp", {"width": W, "height": H, "fps": 240, "layers": {"in_1": {"rect": rect}}}, Stamp("alice", rev)
                    ),
                    api.ParamsUpdate("pip", pip_size, None),
                )
            )
        )
        await trio.sleep(0.004 * (round_number % 3))
    await wait_until(lambda: recorder.views and recorder.views[-1].acks == {"alice": rev})
    seen = [{k: v for k, v in layer(v, "in_1").items() if k != "id"} for v in recorder.views[1:]]
    assert seen, "no view data after the batches"
    for entry in seen:
        assert entry in allowed


async def test_a_batch_with_a_structure_change_lands_in_one_frame(start_loop: Callable[..., Any]) -> None:
    recorder = Recorder()
    session = make_session(fps=240)
    loop = await start_loop(session, recorder)
    await wait_until(lambda: recorder.views)
    rect = {"x": 4, "y": 4, "width": 32, "height": 18}
    comp_params = {"width": W, "height": H, "fps": 240, "layers": {"in_1": {"rect": rect}}}
    session.nodes["pip"] = NodeRecord("pip", "video::colorbars", {"width": 64, "height": 36})
    session.connections.append(ConnectionRecord("pip", "out", "comp", "in_1"))
    loop.submit(api.BatchUpdate((api.ParamsUpdate("comp", comp_params, Stamp("alice", 1)),), topology=session))
    await wait_until(lambda: len(recorder.views) >= 2)
    emission = recorder.views[1]
    assert emission.stamp == Stamp("alice", 1)
    assert {k: layer(emission, "in_1")[k] for k in rect} == rect  # never first shown at its auto-PiP rect


class SlowSource:
    """A test input whose frame() takes as long as the test says."""

    def __init__(self, params: Mapping[str, Any], delays: list[float]) -> None:
        self._delays = delays
        self._frame = SourceFrame("rgba8", 16, 16, bytes(16 * 16 * 4), 1)

    def configure(self, params: Mapping[str, Any]) -> None:
        pass

    def frame(self, t: float = 0.0) -> SourceFrame:
        time.sleep(self._delays[0])
        return self._frame


async def test_pacing_counts_late_frames_and_never_catches_up(
    start_loop: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    delays = [0.0]
    monkeypatch.setitem(
        registry.IMPLEMENTATIONS,
        "test::slow",
        registry.SourceKind(lambda params, context: SlowSource(params, delays), standalone=False),
    )
    fps = 100
    session = make_session(fps=fps)
    session.nodes["slow"] = NodeRecord("slow", "test::slow", {})
    session.connections.append(ConnectionRecord("slow", "out", "comp", "in_1"))
    recorder = Recorder()
    loop = await start_loop(session, recorder)

    def slots() -> int:
        stats = loop.statistics()
        return stats.frames_rendered + stats.frames_dropped

    # Frames of 5 ms at 100 fps: due every 10 ms on the monotonic clock, not 10 ms after the
    # previous one ended (that would drift to about 67 fps). Every slot is rendered or dropped.
    delays[0] = 0.005
    start, slots_start = time.monotonic(), slots()
    await trio.sleep(0.3)
    elapsed = time.monotonic() - start
    assert abs((slots() - slots_start) - elapsed * fps) <= 5

    # Frames taking 4.5 periods: each is late and 4 slots are dropped after it.
    before = loop.statistics()
    delays[0] = 0.045
    await trio.sleep(0.5)
    delays[0] = 0.0
    during = loop.statistics()
    slow_frames = during.frames_rendered - before.frames_rendered
    assert 5 <= slow_frames <= 13  # about 0.5 s / 45 ms, not 50
    assert during.frames_late - before.frames_late >= slow_frames - 1
    assert during.frames_dropped - before.frames_dropped >= 3 * (slow_frames - 1)

    # Back to fast: the normal rate at once, with no burst of missed frames.
    await trio.sleep(0.05)
    after_slow = loop.statistics().frames_rendered
    await trio.sleep(0.3)
    assert loop.statistics().frames_rendered - after_slow <= 0.3 * fps + 4

    # nodestatsupdated: at most once a second, with the counters and percentiles.
    await wait_until(lambda: recorder.stats, timeout=3)
    stats = recorder.stats[-1].stats
    assert recorder.stats[-1].node_id == "comp"
    assert stats["frames_late"] >= 1 and stats["frames_dropped"] >= 3
    assert stats["render_ms_p50"] <= stats["render_ms_p90"] <= stats["render_ms_p99"]
    assert stats["render_ms_p99"] >= 40  # the slow frames were measured
    assert len(recorder.stats) <= 2  # about 1.3 s since the start


async def test_stop_is_idempotent_and_joins_the_thread(start_loop: Callable[..., Any]) -> None:
    recorder = Recorder()
    loop = await start_loop(make_session(), recorder)
    assert loop.running
    loop.stop()
    assert not loop.running
    progress = loop.last_progress()
    loop.stop()
    await trio.sleep(0.05)
    assert loop.last_progress() == progress
    loop.submit(api.ParamsUpdate("comp", {"width": W, "height": H}, Stamp("late", 1)))  # harmless after stop


async def test_gl_is_touched_only_on_the_render_thread(start_loop: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[tuple[str, int]] = []

    def recorded(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            threads.append((name, threading.get_ident()))
            return function(*args, **kwargs)

        return wrapper

    original_create = gl_context.create_context

    def create_context(*args: Any, **kwargs: Any) -> Any:
        threads.append(("create_context", threading.get_ident()))
        ctx = original_create(*args, **kwargs)
        monkeypatch.setattr(ctx, "release", recorded("ctx.release", ctx.release), raising=False)
        return ctx

    monkeypatch.setattr(gl_context, "create_context", create_context)
    for method in ("__init__", "draw_program", "release"):
        monkeypatch.setattr(
            renderer_module.Renderer, method, recorded(f"Renderer.{method}", getattr(renderer_module.Renderer, method))
        )

    recorder = Recorder()
    session = make_session()
    loop = await start_loop(session, recorder)
    session.nodes["comp2"] = NodeRecord("comp2", "video::compositor", {"width": 32, "height": 32, "fps": 120})
    loop.submit(api.TopologyUpdate(session))
    await wait_until(lambda: any(v.node_id == "comp2" for v in recorder.views))
    del session.nodes["comp2"]
    loop.submit(api.TopologyUpdate(session))
    await wait_until(lambda: sum(1 for name, _ in threads if name == "Renderer.release") >= 1)
    loop.stop()
    names = {name for name, _ in threads}
    assert names >= {"create_context", "Renderer.__init__", "Renderer.draw_program", "Renderer.release", "ctx.release"}
    render_threads = {ident for _, ident in threads}
    assert len(render_threads) == 1
    assert threading.get_ident() not in render_threads


async def test_no_gl_context_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def no_context(device_index: int | None = None) -> Any:
        raise gl_context.GLContextError("no OpenGL context: libEGL.so.1 not found")

    monkeypatch.setattr(gl_context, "create_context", no_context)
    recorder = Recorder()
    loop = RenderLoop(make_session(), recorder, trio_token=trio.lowlevel.current_trio_token(), asset_dir=tmp_path)
    loop.start()
    with pytest.raises(api.EngineError, match="libEGL"):
        with trio.fail_after(10):
            await loop.wait_first_frame()
    await wait_until(lambda: recorder.errors)
    assert recorder.errors[0][0] == "comp" and "libEGL" in (recorder.errors[0][1] or "")
    assert [event.session_id for event in recorder.failed] == ["s1"] and "libEGL" in recorder.failed[0].message
    assert recorder.started == []
    loop.stop()
    assert not loop.running


async def test_a_loop_stopped_before_its_first_frame_says_so(tmp_path: Path) -> None:
    recorder = Recorder()
    loop = RenderLoop(make_session(), recorder, trio_token=trio.lowlevel.current_trio_token(), asset_dir=tmp_path)
    loop.submit(api.Stop())  # before the thread exists: it never renders
    loop.start()
    with pytest.raises(api.EngineError, match="stopped before its first frame"):
        with trio.fail_after(10):
            await loop.wait_first_frame()
    assert recorder.started == [] and recorder.views == []
    loop.stop()
    assert not loop.running


async def test_output_listeners_get_every_frame_and_a_failing_one_is_reported(start_loop: Callable[..., Any]) -> None:
    recorder = Recorder()
    loop = await start_loop(make_session(), recorder)
    received: list[tuple[str, int, int]] = []

    def listener(node_id: str, frame: Any) -> None:
        received.append((node_id, frame.frame_number, threading.get_ident()))

    disk_full = threading.Event()
    disk_full.set()

    def broken(node_id: str, frame: Any) -> None:
        if disk_full.is_set():
            raise OSError("disk full")

    loop.add_output_listener(listener)
    loop.add_output_listener(broken)
    await wait_until(lambda: any(message and "disk full" in message for _, message in recorder.errors))
    count = len(received)
    await wait_until(lambda: len(received) >= count + 5)  # the loop renders on
    numbers = [number for _, number, _ in received]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    assert {node for node, _, _ in received} == {"comp"}
    assert threading.get_ident() not in {ident for _, _, ident in received}
    disk_full.clear()
    await wait_until(lambda: recorder.errors[-1] == ("comp", None))  # the error clears


async def test_image_input_from_the_asset_dir_and_a_missing_one_reported(start_loop: Callable[..., Any], tmp_path: Path) -> None:
    from PIL import Image

    Image.new("RGBA", (40, 30), (255, 0, 0, 255)).save(tmp_path / "logo.png")
    session = make_session()
    session.nodes["logo"] = NodeRecord("logo", "video::image", {"asset_path": "logo.png"})
    session.nodes["gone"] = NodeRecord("gone", "video::image", {"asset_path": "missing.png"})
    session.connections.append(ConnectionRecord("logo", "out", "comp", "in_1"))
    session.nodes["comp"].params["num_inputs"] = 3
    session.connections.append(ConnectionRecord("gone", "out", "comp", "in_2"))
    recorder = Recorder()
    await start_loop(session, recorder)  # the asset directory of the fixture is tmp_path
    await wait_until(lambda: recorder.views and recorder.errors)
    logo = layer(recorder.views[0], "in_1")
    assert (logo["source_width"], logo["source_height"]) == (40, 30)
    assert [item["id"] for item in recorder.views[0].layout["layers"]] == ["in_0", "in_1"]  # in_2 has no frame
    assert recorder.errors[0][0] == "gone" and "missing.png" in (recorder.errors[0][1] or "")


async def test_a_frames_events_are_handed_over_together_at_its_end(tmp_path: Path) -> None:
    # Each hand-over wakes the receiver (trio, or an engine's socket writer): a frame's view data waits for
    # the frame's end and leaves with it, in one hand-over.
    rounds: list[list[type]] = []
    current: list[type] = []

    class InlineDelivery:
        def run_sync_soon(self, sync_fn: Callable[[], object]) -> None:
            current.clear()
            sync_fn()  # at once, on the render thread: what was handed over is what this round delivers
            rounds.append(list(current))

    class Events:
        def on_event(self, event: api.Event) -> None:
            current.append(type(event))

    loop = RenderLoop(make_session(fps=60), Events(), delivery=InlineDelivery(), asset_dir=tmp_path)
    loop.start()
    try:
        deadline = time.monotonic() + 20
        while loop.statistics().frames_rendered < 3:
            assert time.monotonic() < deadline, "no frames"
            time.sleep(0.01)
        rect = {"x": 0, "y": 0, "width": 40, "height": 30}
        for rev in range(1, 11):  # a stamped update each frame or so: view data in most frames
            rect = {**rect, "x": rev}
            loop.submit(
                api.ParamsUpdate(
                    "comp", {"width": W, "height": H, "fps": 60, "layers": {"in_0": {"rect": rect}}}, Stamp("alice", rev)
                )
            )
            time.sleep(1 / 60)
        time.sleep(0.1)
    finally:
        loop.stop()
    with_view = [kinds for kinds in rounds if api.ViewData in kinds]
    assert len(with_view) >= 3
    # Every round that carried view data ended with its frame's end: never a view data on its own.
    assert all(api.FrameEnded in kinds[kinds.index(api.ViewData) :] for kinds in with_view), rounds
