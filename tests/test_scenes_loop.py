"""Scenes in a running render loop (llvmpipe, small canvases): the program scene is what the output
and the view data show; editing another scene changes neither."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio

from compositord.daemon.engine import api
from compositord.daemon.engine.loop import RenderLoop
from compositord.daemon.state.model import ConnectionRecord, NodeRecord, SessionRecord
from compositord.protocol.causal import Stamp
from compositord.protocol.scenes import AnimateSpec
from compositord.tests.engine_recorder import EventRecorder
from compositord.tests.sink_helpers import wait_until

pytestmark = pytest.mark.gl

W, H = 96, 54
RED, BLUE = "#FF0000", "#0000FF"


def full_rect(x: int = 0, y: int = 0, width: int = W, height: int = H) -> dict[str, Any]:
    return {"x": x, "y": y, "width": width, "height": height}


def scenes_params(**extra: Any) -> dict[str, Any]:
    """Scene ``red`` shows in_0 full frame, scene ``blue`` shows in_1 full frame."""
    return {
        "width": W,
        "height": H,
        "fps": 60,
        "scenes": {
            "red": {"layers": {"in_0": {"rect": full_rect()}, "in_1": {"visible": False}}},
            "blue": {"layers": {"in_0": {"visible": False}, "in_1": {"rect": full_rect(), "aspect_fit": False}}},
        },
        "program_scene": "red",
        **extra,
    }


def scenes_session(comp_params: dict[str, Any]) -> SessionRecord:
    solid = {"width": W, "height": H, "pattern": "solid"}
    return SessionRecord(
        "s1",
        "scenes",
        {
            "red": NodeRecord("red", "video::colorbars", {**solid, "color": RED}),
            "blue": NodeRecord("blue", "video::colorbars", {**solid, "color": BLUE}),
            "comp": NodeRecord("comp", "video::compositor", comp_params),
        },
        [ConnectionRecord("red", "out", "comp", "in_0"), ConnectionRecord("blue", "out", "comp", "in_1")],
    )


def centre_pixel(loop: RenderLoop) -> tuple[int, ...]:
    output = loop.latest_output("comp")
    assert output is not None
    return tuple(int(v) for v in output.as_array()[H // 2, W // 2, :3])


async def test_the_program_scene_is_on_the_output_and_in_the_view_data(start_loop: Callable[..., Any]) -> None:
    recorder = EventRecorder()
    loop = await start_loop(scenes_session(scenes_params()), recorder)
    await wait_until(lambda: recorder.views)
    assert recorder.views[-1].layout["scene"] == "red"
    assert [layer["id"] for layer in recorder.views[-1].layout["layers"]] == ["in_0"], "the other layer is hidden in red"
    assert centre_pixel(loop) == (255, 0, 0)

    # Editing the scene that is not on program changes neither the output nor the layout.
    views = len(recorder.views)
    edited = scenes_params()
    edited["scenes"]["blue"]["layers"]["in_1"]["rect"] = full_rect(10, 10, 20, 20)
    loop.submit(api.ParamsUpdate("comp", edited, None))
    frames = loop.statistics().frames_rendered
    await wait_until(lambda: loop.statistics().frames_rendered >= frames + 5)
    assert len(recorder.views) == views and centre_pixel(loop) == (255, 0, 0)

    # Editing the program scene is seen at once, with the stamp in the view data.
    edited["scenes"]["red"]["layers"]["in_0"]["rect"] = full_rect(0, 0, W // 2, H)
    edited["scenes"]["red"]["layers"]["in_0"]["aspect_fit"] = False
    loop.submit(api.ParamsUpdate("comp", edited, Stamp("alice", 1)))
    await wait_until(lambda: recorder.views[-1].stamp == Stamp("alice", 1))
    (layer,) = recorder.views[-1].layout["layers"]
    assert (layer["x"], layer["width"]) == (0, W // 2)
    await wait_until(lambda: centre_pixel(loop) == (0, 0, 0))  # the right half shows the background now

    # A cut (the default transition) to blue: the next frame shows it.
    loop.submit(api.ParamsUpdate("comp", {**edited, "program_scene": "blue"}, Stamp("alice", 2)))
    await wait_until(lambda: recorder.views[-1].stamp == Stamp("alice", 2))
    assert recorder.views[-1].layout["scene"] == "blue"
    assert [(layer["id"], layer["width"]) for layer in recorder.views[-1].layout["layers"]] == [("in_1", 20)]
    output = loop.latest_output("comp")
    assert output is not None
    pixels = output.as_array()
    assert tuple(pixels[20, 20, :3]) == (0, 0, 255) and tuple(pixels[40, 60, :3]) == (0, 0, 0)


async def test_params_without_scenes_have_no_scene_in_the_view_data(start_loop: Callable[..., Any]) -> None:
    recorder = EventRecorder()
    loop = await start_loop(scenes_session({"width": W, "height": H, "fps": 60}), recorder)
    await wait_until(lambda: recorder.views)
    assert "scene" not in recorder.views[-1].layout
    assert set(recorder.views[-1].layout) == {"canvas_width", "canvas_height", "layers", "text_overlays", "image_overlays"}
    assert np.array_equal(loop.latest_output("comp").as_array()[0, 0, :3], [255, 0, 0])


async def test_view_data_during_a_transition(start_loop: Callable[..., Any]) -> None:
    recorder = EventRecorder()
    params = scenes_params(fps=30)
    params["scenes"]["blue"]["layers"]["in_1"]["rect"] = full_rect(8, 4, 48, 27)
    loop = await start_loop(scenes_session(params), recorder)
    await wait_until(lambda: recorder.views)
    change = {**params, "program_scene": "blue", "transition": {"kind": "push", "duration_ms": 400, "direction": "up"}}
    loop.submit(api.ParamsUpdate("comp", change, Stamp("alice", 1)))
    await wait_until(lambda: recorder.views[-1].layout.get("scene") == "blue" and "transition" not in recorder.views[-1].layout)
    during = [view for view in recorder.views if "transition" in view.layout]
    assert during, "view data names the running transition"
    first = during[0]
    assert first.acks == {"alice": 1}, "the ack comes with the frame the transition starts"
    frames = 12  # 400 ms at 30 fps
    seen = [view.layout["transition"]["frame"] for view in during]
    assert seen == sorted(set(seen)) and seen[-1] <= frames - 1
    for view in during:
        transition = view.layout["transition"]
        assert (transition["kind"], transition["direction"], transition["from"], transition["to"]) == (
            "push",
            "up",
            "red",
            "blue",
        )
        assert transition["frames"] == frames
        assert transition["progress"] == pytest.approx(transition["frame"] / frames, abs=1e-6)
        # The layout is the incoming scene's, where its params put it.
        assert view.layout["scene"] == "blue"
        assert [(layer["id"], layer["x"], layer["y"]) for layer in view.layout["layers"]] == [("in_1", 8, 4)]
        assert view.acks == {"alice": 1}
    assert [view.seq for view in recorder.views] == sorted({view.seq for view in recorder.views})
    # After the transition, nothing moves: no more view data.
    count = len(recorder.views)
    frames_then = loop.statistics().frames_rendered
    await wait_until(lambda: loop.statistics().frames_rendered >= frames_then + 5)
    assert len(recorder.views) == count


async def test_a_held_t_bar_renders_the_mix_and_a_take_completes_it(start_loop: Callable[..., Any]) -> None:
    recorder = EventRecorder()
    params = scenes_params(fps=30, preview_scene="blue", transition={"kind": "fade", "duration_ms": 400})
    loop = await start_loop(scenes_session(params), recorder)
    await wait_until(lambda: recorder.views)
    held = {**params, "transition_position": 0.5}
    loop.submit(api.ParamsUpdate("comp", held, Stamp("alice", 1)))
    await wait_until(lambda: recorder.views[-1].stamp == Stamp("alice", 1))
    red, green, blue = centre_pixel(loop)
    assert abs(red - 128) <= 2 and green == 0 and abs(blue - 128) <= 2, "half red, half blue"
    transition = recorder.views[-1].layout["transition"]
    assert (transition["manual"], transition["position"], transition["from"], transition["to"]) == (True, 0.5, "red", "blue")
    assert recorder.views[-1].layout["scene"] == "red"
    assert [layer["id"] for layer in recorder.views[-1].layout["layers"]] == ["in_0"], "the program scene's boxes"

    # Held: frame after frame the same mix.
    frames = loop.statistics().frames_rendered
    await wait_until(lambda: loop.statistics().frames_rendered >= frames + 5)
    assert abs(centre_pixel(loop)[0] - 128) <= 2

    # The take (as the server stores it): the rest of the fade from one half, never back towards red.
    reds: list[int] = []
    taken = {**params, "program_scene": "blue", "preview_scene": "red"}
    loop.submit(api.ParamsUpdate("comp", taken, Stamp("alice", 2)))
    with trio.fail_after(10):
        while not reds or reds[-1] != 0:
            reds.append(centre_pixel(loop)[0])
            await trio.sleep(0.005)
    assert max(reds) <= 130 and reds == sorted(reds, reverse=True), f"no jump: {reds}"
    assert centre_pixel(loop) == (0, 0, 255)
    await wait_until(lambda: "transition" not in recorder.views[-1].layout)
    assert recorder.views[-1].layout["scene"] == "blue"


def recorded_session() -> SessionRecord:
    """Bars and a ramp in two scenes with different layouts, recorded to Y4M."""
    session = scenes_session(
        {
            "width": W,
            "height": H,
            "fps": 30,
            "output_format": "nv12",
            "scenes": {
                "a": {"layers": {"in_0": {"rect": full_rect()}, "in_1": {"rect": full_rect(50, 28, 40, 22)}}},
                "b": {
                    "layers": {
                        "in_1": {"rect": full_rect(), "z_index": 0},
                        "in_0": {"rect": full_rect(10, 8, 40, 24), "rotation_degrees": 20, "opacity": 0.7, "z_index": 1},
                    }
                },
            },
            "program_scene": "a",
        }
    )
    session.nodes["red"] = NodeRecord("red", "video::colorbars", {"width": W, "height": H, "pattern": "smpte"})
    session.nodes["blue"] = NodeRecord("blue", "video::colorbars", {"width": 64, "height": 36, "pattern": "ramp"})
    session.nodes["rec"] = NodeRecord("rec", "sink::y4m", {"path": "transition.y4m"})
    session.connections.append(ConnectionRecord("comp", "out", "rec", "in"))
    return session


async def record_transition(directory: Path) -> list[np.ndarray]:
    """Run the session, switch to scene b with a fade-and-push pair, and return the recorded frames from the
    first one that differs from scene a."""
    from compositord.tests.sink_helpers import decode, running_loop

    session = recorded_session()
    directory.mkdir()
    async with running_loop(session, directory) as (loop, _):
        frames = loop.statistics().frames_rendered
        await wait_until(lambda: loop.statistics().frames_rendered >= frames + 3)
        comp = session.nodes["comp"].params
        loop.submit(
            api.ParamsUpdate(
                "comp",
                {**comp, "program_scene": "b", "transition": {"kind": "push", "duration_ms": 300, "easing": "ease_in_out"}},
                None,
            )
        )
        await wait_until(lambda: loop.statistics().frames_rendered >= frames + 20)
        sink = loop.sink("rec")
        assert sink is not None and sink.stats()["frames_dropped"] == 0
    recorded = decode(directory / "transition.y4m").frames
    start = next(index for index, frame in enumerate(recorded) if not np.array_equal(frame, recorded[0]))
    assert len(recorded) >= start + 10
    return recorded[start : start + 10]


async def test_a_recorded_transition_is_the_same_frame_for_frame_in_a_second_run(tmp_path: Path) -> None:
    first = await record_transition(tmp_path / "one")
    second = await record_transition(tmp_path / "two")
    for index, (one, two) in enumerate(zip(first, second, strict=True)):
        assert np.array_equal(one, two), f"frame {index} of the transition differs between the runs"
    # The frames are the transition's: each one differs from the one before, then it holds still.
    assert all(not np.array_equal(a, b) for a, b in itertools.pairwise(first[:9]))
    assert np.array_equal(first[9], first[8])


async def test_view_data_during_an_animated_edit(start_loop: Callable[..., Any]) -> None:
    """A rect animated over 10 frames: the first view data carries the stamp and the first step, each later one
    the layout of its frame, the last the durable value; a newer edit starts from where the layer is."""
    recorder = EventRecorder()
    base = {"width": W, "height": H, "fps": 30, "layers": {"in_1": {"rect": full_rect(0, 0, 40, 20), "aspect_fit": False}}}
    loop = await start_loop(scenes_session(base), recorder)
    await wait_until(lambda: recorder.views)
    moved = {**base, "layers": {"in_1": {"rect": full_rect(50, 30, 40, 20), "aspect_fit": False}}}
    loop.submit(api.ParamsUpdate("comp", moved, Stamp("alice", 1), AnimateSpec(333, "linear")))  # 10 frames

    def pip(view: api.ViewData) -> tuple[float, float]:
        (layer,) = [entry for entry in view.layout["layers"] if entry["id"] == "in_1"]
        return (layer["x"], layer["y"])

    await wait_until(lambda: pip(recorder.views[-1]) == (50, 30))
    during = recorder.views[1:]
    assert during[0].stamp == Stamp("alice", 1), "the ack comes with the frame the animation starts"
    assert pip(during[0]) == pytest.approx((5, 3)), "frame 1 of 10 is the first step, not the old value"
    steps = [pip(view) for view in during]
    assert steps == sorted(steps) and all(y == pytest.approx(x * 0.6) for x, y in steps)
    assert all(round(x / 5, 6).is_integer() for x, _ in steps), "each one a frame's layout: whole tenths of the way"
    assert all(view.acks == {"alice": 1} for view in during)

    # A newer animated edit during the animation starts from the current value.
    count = len(recorder.views)
    loop.submit(api.ParamsUpdate("comp", base, Stamp("alice", 2), AnimateSpec(1000, "linear")))
    await wait_until(lambda: len(recorder.views) > count + 2)
    loop.submit(api.ParamsUpdate("comp", moved, Stamp("alice", 3), AnimateSpec(1000, "linear")))
    await wait_until(lambda: any(view.stamp == Stamp("alice", 3) for view in recorder.views))
    (turn,) = [index for index, view in enumerate(recorder.views) if view.stamp == Stamp("alice", 3)]
    before, after = pip(recorder.views[turn - 1]), pip(recorder.views[turn])
    assert 0 < before[0] < 50 and after[0] > before[0], "from where the layer was, back towards x = 50"
    assert after[0] < 49, "a step of a 30-frame animation, not a jump to the end"
    # An edit without _animate ends it: the durable value at once.
    loop.submit(api.ParamsUpdate("comp", base, Stamp("alice", 4)))
    await wait_until(lambda: pip(recorder.views[-1]) == (0, 0))
    (jump,) = [view for view in recorder.views if view.stamp == Stamp("alice", 4)]
    assert pip(jump) == (0, 0)
