"""Scene transitions drawn by the GL renderer, frame by frame as ``SceneProgram`` counts them.

A fade is checked against the independent NumPy model (tests/render_reference.py): frame k of n
is the blend of both scenes' model renders at eased k/n, within 2/255 outside a 3 px band around
every edge. Slide, push and wipe move whole pixels, so their frames are checked bit for bit against
the two scenes' own GL renders, placed where an independent computation of the offset puts them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import moderngl
import numpy as np
import pytest

from compositord.daemon.engine.render.frames import InputFrame, OutputFrame, SourceFrame
from compositord.daemon.engine.render.renderer import Renderer, Transition
from compositord.daemon.engine.render.scene import resolve_scene
from compositord.daemon.engine.scene_program import ProgramFrame, SceneProgram
from compositord.protocol import params as protocol_params
from compositord.protocol import scenes
from compositord.tests.render_reference import EDGE_BAND, RefLayer, assert_close, composite, gradient

pytestmark = pytest.mark.gl

W, H = 160, 120
FPS = 30
BACKGROUND = "#203040FF"
BACKGROUND_RGBA = (0x20 / 255, 0x30 / 255, 0x40 / 255, 1.0)

SOURCE_0 = gradient(80, 60)
SOURCE_1 = gradient(96, 72, seed=3)[:, ::-1].copy()


def rect(x: int, y: int, width: int, height: int) -> dict[str, int]:
    return {"x": x, "y": y, "width": width, "height": height}


# Three scenes over the same two inputs, each with its model.
SCENES: dict[str, dict[str, Any]] = {
    "a": {"layers": {"in_0": {"rect": rect(10, 10, 80, 60), "opacity": 0.8}, "in_1": {"visible": False}}},
    "b": {
        "layers": {
            "in_0": {"rect": rect(0, 60, 80, 60), "aspect_fit": False},
            "in_1": {"rect": rect(50, 20, 96, 72), "rotation_degrees": 15},
        }
    },
    "c": {"layers": {"in_0": {"visible": False}, "in_1": {"rect": rect(20, 30, 120, 90), "opacity": 0.6}}},
}
MODELS: dict[str, list[RefLayer]] = {
    "a": [RefLayer(SOURCE_0, 10, 10, 80, 60, opacity=0.8)],
    "b": [RefLayer(SOURCE_0, 0, 60, 80, 60), RefLayer(SOURCE_1, 50, 20, 96, 72, rotation_degrees=15)],
    "c": [RefLayer(SOURCE_1, 20, 30, 120, 90, opacity=0.6)],
}
FRAMES: dict[str, InputFrame] = {
    "in_0": SourceFrame("rgba8", 80, 60, SOURCE_0, 1, opaque=True),
    "in_1": SourceFrame("rgba8", 96, 72, SOURCE_1, 1, opaque=True),
}


def full(program: str, transition: Mapping[str, Any] | None = None) -> dict[str, Any]:
    durable = {
        "width": W,
        "height": H,
        "fps": FPS,
        "background": BACKGROUND,
        "scenes": SCENES,
        "program_scene": program,
        "transition": dict(transition or {}),
    }
    return protocol_params.with_defaults("video::compositor", protocol_params.validate("video::compositor", durable))


def model(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(premultiplied RGBA 0..255, edge band) of a scene as the NumPy model draws it."""
    picture, edges = composite(W, H, BACKGROUND_RGBA, MODELS[name], EDGE_BAND)
    return picture * 255.0, edges


def draw(renderer: Renderer, plan: ProgramFrame) -> OutputFrame:
    """One program frame as the render loop draws it."""
    scene = resolve_scene(plan.params, FRAMES)
    transition = None
    if plan.mix is not None:
        outgoing = resolve_scene(plan.outgoing_params, FRAMES) if plan.outgoing_params is not None else None
        transition = Transition(plan.mix, outgoing)
    renderer.begin_frame()
    try:
        if plan.take_snapshot:
            assert renderer.take_snapshot()
        output = renderer.draw_program(scene, FRAMES, transition=transition)
    finally:
        renderer.end_frame(FRAMES)
    assert output is not None
    return output


def next_frame(program: SceneProgram, renderer: Renderer, params: dict[str, Any]) -> tuple[ProgramFrame, np.ndarray]:
    plan = program.next_frame(params, FPS, can_snapshot=renderer.program_texture() is not None)
    return plan, draw(renderer, plan).as_array()


@pytest.fixture
def renderer(gl_ctx: moderngl.Context) -> Any:
    made = Renderer(gl_ctx, W, H)
    yield made
    made.release()


def test_the_scenes_alone_match_the_model(renderer: Renderer) -> None:
    program = SceneProgram()
    for name in SCENES:
        _, output = next_frame(program, renderer, full(name))
        picture, edges = model(name)
        assert_close(output, picture, edges)


@pytest.mark.parametrize("easing", ["linear", "ease_in_out"])
def test_a_fade_at_frame_k_of_n_is_the_blend_of_both_scenes_at_eased_k_over_n(renderer: Renderer, easing: str) -> None:
    program = SceneProgram()
    next_frame(program, renderer, full("a"))
    params = full("b", {"kind": "fade", "duration_ms": 300, "easing": easing})
    frames = 9  # 300 ms at 30 fps, counted in output frames
    a, a_edges = model("a")
    b, b_edges = model("b")
    progresses = []
    for k in range(1, frames + 1):
        plan, output = next_frame(program, renderer, params)
        eased = scenes.ease(easing, k / frames)
        assert_close(output, (1 - eased) * a + eased * b, a_edges | b_edges)
        if k < frames:
            assert plan.transition is not None and (plan.transition["frame"], plan.transition["frames"]) == (k, frames)
            assert plan.transition["progress"] == pytest.approx(eased, abs=1e-6)
            progresses.append(plan.transition["progress"])
        else:
            assert plan.transition is None and plan.mix is None, "the last frame is the incoming scene alone"
    if easing == "ease_in_out":
        assert progresses[0] < 1 / frames < progresses[-1] - (1 - 2 / frames), "eased, not linear"
    # Over: the incoming scene alone, and the transition's pictures are released.
    _, output = next_frame(program, renderer, params)
    assert_close(output, b, b_edges)
    assert renderer.stats.transition_frames == frames - 1


def whole_pixels(eased: float, extent: int) -> int:
    """How far the edge has moved, counted independently of protocol/scenes.py: halves round up."""
    return math.floor(eased * extent + 0.5)


def expected_move(kind: str, direction: str, moved: int, outgoing: np.ndarray, incoming: np.ndarray) -> np.ndarray:
    """The frame of a move transition built from the two pictures by array slicing."""
    horizontal = direction in ("left", "right")
    extent = W if horizontal else H
    rest = extent - moved
    result = outgoing.copy()
    if kind == "wipe":
        if direction == "left":
            result[:, rest:] = incoming[:, rest:]
        elif direction == "right":
            result[:, :moved] = incoming[:, :moved]
        elif direction == "up":
            result[rest:] = incoming[rest:]
        else:
            result[:moved] = incoming[:moved]
        return result
    if kind == "push":
        # The outgoing picture moves `moved` pixels in the direction of motion; nothing shows where it left.
        result = np.zeros_like(outgoing)
        if direction == "left":
            result[:, : W - moved] = outgoing[:, moved:]
        elif direction == "right":
            result[:, moved:] = outgoing[:, : W - moved]
        elif direction == "up":
            result[: H - moved] = outgoing[moved:]
        else:
            result[moved:] = outgoing[: H - moved]
    # The incoming picture enters from the opposite side, `moved` pixels of it visible.
    if direction == "left":
        result[:, rest:] = incoming[:, :moved]
    elif direction == "right":
        result[:, :moved] = incoming[:, rest:]
    elif direction == "up":
        result[rest:] = incoming[:moved]
    else:
        result[:moved] = incoming[rest:]
    return result


@pytest.mark.parametrize("direction", scenes.DIRECTIONS)
@pytest.mark.parametrize("kind", ["slide", "push", "wipe"])
def test_moving_transitions_place_whole_pixels_exactly(renderer: Renderer, kind: str, direction: str) -> None:
    program = SceneProgram()
    _, alone_a = next_frame(program, renderer, full("a"))
    frames = 6  # 200 ms at 30 fps
    params = full("b", {"kind": kind, "duration_ms": 200, "easing": "ease_out", "direction": direction})
    alone_b = renderer.render(resolve_scene(scenes.scene_params(params, "b"), FRAMES), FRAMES).as_array()
    extent = W if direction in ("left", "right") else H
    moves = []
    for k in range(1, frames):
        plan, output = next_frame(program, renderer, params)
        assert plan.mix is not None
        moved = whole_pixels(scenes.ease("ease_out", k / frames), extent)
        moves.append(moved)
        expected = expected_move(kind, direction, moved, alone_a, alone_b)
        difference = np.argwhere(np.any(output != expected, axis=-1))
        assert difference.size == 0, f"frame {k}: {len(difference)} pixels differ, first at (y, x) {tuple(difference[0])}"
    assert moves == sorted(moves) and moves[0] > 0 and moves[-1] < extent
    _, output = next_frame(program, renderer, params)
    assert np.array_equal(output, alone_b)


def test_a_wipe_edge_is_where_it_should_be(renderer: Renderer) -> None:
    """Wipe left, linear, 10 frames over 160 px: the edge moves 16 px a frame from the right."""
    program = SceneProgram()
    _, alone_a = next_frame(program, renderer, full("a"))
    params = full("c", {"kind": "wipe", "duration_ms": 333, "easing": "linear", "direction": "left"})
    alone_c = renderer.render(resolve_scene(scenes.scene_params(params, "c"), FRAMES), FRAMES).as_array()
    differs = np.any(alone_a != alone_c, axis=-1)
    for k in range(1, 10):
        _, output = next_frame(program, renderer, params)
        edge = W - 16 * k
        assert np.array_equal(output[:, edge:], alone_c[:, edge:]) and np.array_equal(output[:, :edge], alone_a[:, :edge])
        if 2 <= k <= 8:
            # Where the scenes differ on both sides of the edge, so an edge a column off would fail above.
            assert differs[:, edge - 4 : edge].any() and differs[:, edge : edge + 4].any()


def test_an_interrupted_transition_starts_from_what_is_on_screen(renderer: Renderer) -> None:
    program = SceneProgram()
    next_frame(program, renderer, full("a"))
    to_b = full("b", {"kind": "fade", "duration_ms": 333, "easing": "linear"})  # 10 frames
    for _ in range(4):
        _, on_screen = next_frame(program, renderer, to_b)
    to_c = full("c", {"kind": "fade", "duration_ms": 200, "easing": "ease_in"})  # 6 frames
    c, c_edges = model("c")
    plan, output = next_frame(program, renderer, to_c)
    assert plan.take_snapshot and plan.outgoing_params is None, "drawn from the snapshot, not from a scene"
    assert plan.transition is not None and (plan.transition["from"], plan.transition["to"], plan.transition["frame"]) == (
        "b",
        "c",
        1,
    )
    eased = scenes.ease("ease_in", 1 / 6)
    # What was on screen (the fade a -> b at 4/10), mixed towards c: no jump.
    assert_close(output, (1 - eased) * on_screen.astype(np.float64) + eased * c, c_edges)
    for k in range(2, 6):
        plan, output = next_frame(program, renderer, to_c)
        assert not plan.take_snapshot
        eased = scenes.ease("ease_in", k / 6)
        assert_close(output, (1 - eased) * on_screen.astype(np.float64) + eased * c, c_edges)
    plan, output = next_frame(program, renderer, to_c)
    assert plan.mix is None
    assert_close(output, c, c_edges)


def test_editing_either_scene_during_a_transition_is_seen_at_once(renderer: Renderer) -> None:
    program = SceneProgram()
    next_frame(program, renderer, full("a"))
    params = full("b", {"kind": "wipe", "duration_ms": 333, "easing": "linear", "direction": "right"})
    next_frame(program, renderer, params)
    # The outgoing scene a moves its layer to the right half, under the part a still covers.
    edited = dict(params, scenes={**params["scenes"], "a": {**params["scenes"]["a"]}})
    edited["scenes"]["a"]["layers"] = {**edited["scenes"]["a"]["layers"], "in_0": {**edited["scenes"]["a"]["layers"]["in_0"]}}
    edited["scenes"]["a"]["layers"]["in_0"]["rect"] = rect(90, 50, 60, 45)
    plan, output = next_frame(program, renderer, edited)
    assert plan.transition is not None and plan.transition["frame"] == 2
    picture, edges = composite(W, H, BACKGROUND_RGBA, [RefLayer(SOURCE_0, 90, 50, 60, 45, opacity=0.8)], EDGE_BAND)
    region = np.zeros((H, W), dtype=bool)
    region[:, :32] = True  # 2 of 10 frames of a wipe right over 160 px: b shows left of x = 32
    assert_close(output, picture * 255.0, edges | region, min_compared=0.4)


def test_a_deleted_outgoing_scene_goes_on_from_the_snapshot(renderer: Renderer) -> None:
    program = SceneProgram()
    next_frame(program, renderer, full("a"))
    params = full("b", {"kind": "fade", "duration_ms": 333})
    _, before = next_frame(program, renderer, params)
    without_a = dict(params, scenes={name: scene for name, scene in params["scenes"].items() if name != "a"})
    plan, output = next_frame(program, renderer, without_a)
    assert plan.take_snapshot and plan.outgoing_params is None and plan.transition is not None
    b, b_edges = model("b")
    eased = 2 / 10
    assert_close(output, (1 - eased) * before.astype(np.float64) + eased * b, b_edges)


def test_a_cut_switches_in_the_next_frame(renderer: Renderer) -> None:
    program = SceneProgram()
    next_frame(program, renderer, full("a"))
    plan, output = next_frame(program, renderer, full("c"))
    assert plan.mix is None and plan.transition is None
    c, c_edges = model("c")
    assert_close(output, c, c_edges)
    assert renderer.stats.transition_frames == 0


def test_transitions_previews_and_snapshots_leave_no_gl_object_behind(renderer: Renderer) -> None:
    """Many transitions (interrupted ones too) and preview pictures, then plain frames: the live GL objects are
    what they were after the first plain frame (the canvases and the preview targets are released)."""
    from compositord.tests.test_render_leaks import live_gl_objects

    program = SceneProgram()
    next_frame(program, renderer, full("b"))  # both inputs drawn: their textures are made, and kept while connected
    baseline = live_gl_objects()
    kinds = ["fade", "push", "slide", "wipe"]
    for round_ in range(12):
        target = "abc"[(round_ + 1) % 3]
        params = full(target, {"kind": kinds[round_ % 4], "duration_ms": 200, "direction": scenes.DIRECTIONS[round_ % 4]})
        for _ in range(3 if round_ % 2 else 7):  # odd rounds are interrupted by the next one
            plan = program.next_frame(params, FPS, can_snapshot=renderer.program_texture() is not None)
            scene = resolve_scene(plan.params, FRAMES)
            outgoing = resolve_scene(plan.outgoing_params, FRAMES) if plan.outgoing_params is not None else None
            renderer.begin_frame()
            try:
                if plan.take_snapshot:
                    renderer.take_snapshot()
                transition = Transition(plan.mix, outgoing) if plan.mix is not None else None
                renderer.draw_program(scene, FRAMES, transition=transition)
                renderer.draw_preview(resolve_scene(scenes.scene_params(params, "a"), FRAMES), FRAMES, read_back=round_ % 3 == 0)
            finally:
                renderer.end_frame(FRAMES)
    assert renderer.stats.transition_frames > 30 and renderer.stats.preview_frames == 12 * 5
    for _ in range(8):
        next_frame(program, renderer, full("b"))
    assert live_gl_objects() == baseline
