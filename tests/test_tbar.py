"""The T-bar (``transition_position``) in ``SceneProgram``, frame by frame, without GL: what each frame draws
and what the view data says, by the rules in the module's header (docs/RENDERING.md "The T-bar")."""

from __future__ import annotations

from typing import Any

import pytest

from compositord.daemon.engine.scene_program import ProgramFrame, SceneProgram
from compositord.protocol import params as protocol_params
from compositord.protocol import scenes
from compositord.protocol.errors import RemoteProtocolError

W, H, FPS = 160, 90, 30
SCENES = {
    name: {"layers": {"in_0": {"rect": {"x": x, "y": 0, "width": 40, "height": 40}}}}
    for name, x in (("a", 0), ("b", 50), ("c", 100))
}


def full(program: str, preview: str | None, position: float | None, **transition: Any) -> dict[str, Any]:
    durable: dict[str, Any] = {
        "width": W,
        "height": H,
        "fps": FPS,
        "num_inputs": 1,
        "scenes": SCENES,
        "program_scene": program,
        "transition": {"kind": "fade", "duration_ms": 1000, "easing": "ease_in", **transition},
    }
    if preview is not None:
        durable["preview_scene"] = preview
    if position is not None:
        durable["transition_position"] = position
    return protocol_params.with_defaults("video::compositor", protocol_params.validate("video::compositor", durable))


def layer_x(flat: dict[str, Any]) -> int:
    return int(flat["layers"]["in_0"]["rect"]["x"])


def frame(program: SceneProgram, params: dict[str, Any]) -> ProgramFrame:
    return program.next_frame(params, FPS, can_snapshot=True)


def started(first: dict[str, Any]) -> SceneProgram:
    program = SceneProgram()
    frame(program, first)
    return program


def test_a_held_position_mixes_program_to_preview_linearly_and_keeps_the_program_layout() -> None:
    program = started(full("a", "b", None))
    plan = frame(program, full("a", "b", 0.25))
    assert plan.manual and plan.scene == "a"
    assert plan.mix == scenes.MixGeometry("fade", weight=0.25), "linear: the params' ease_in is not applied to the hand"
    assert plan.outgoing_params is not None and layer_x(plan.outgoing_params) == 0, "the program scene goes out"
    assert layer_x(plan.params) == 50, "the preview scene comes in"
    assert plan.transition == {
        "kind": "fade",
        "direction": "left",
        "easing": "linear",
        "from": "a",
        "to": "b",
        "manual": True,
        "position": 0.25,
        "progress": 0.25,
    }
    # Held: the same frame again and again, and a moved bar shows at once.
    assert frame(program, full("a", "b", 0.25)).mix == plan.mix
    assert frame(program, full("a", "b", 0.75)).mix == scenes.MixGeometry("fade", weight=0.75)


def test_the_ends_of_the_bar_draw_one_scene_alone() -> None:
    program = started(full("a", "b", None))
    at_zero = frame(program, full("a", "b", 0.0))
    assert at_zero.mix is None and layer_x(at_zero.params) == 0 and at_zero.transition is not None
    assert at_zero.transition["position"] == 0.0
    at_one = frame(program, full("a", "b", 1.0))
    assert at_one.mix is None and layer_x(at_one.params) == 50, "the preview scene alone"
    assert at_one.manual and at_one.outgoing_params is not None and layer_x(at_one.outgoing_params) == 0, "the layout: a's"


def test_a_moving_kind_is_placed_at_the_position() -> None:
    program = started(full("a", "b", None, kind="wipe", direction="right"))
    plan = frame(program, full("a", "b", 0.5, kind="wipe", direction="right"))
    assert plan.mix == scenes.mix_geometry(scenes.TransitionSpec("wipe", 1000, "linear", "right"), 0.5, W, H)
    assert plan.mix is not None and plan.mix.to_region == (0, 0, 80, H)


def test_a_cut_under_the_bar_switches_at_one_half() -> None:
    program = started(full("a", "b", None, kind="cut"))
    below = frame(program, full("a", "b", 0.49, kind="cut"))
    assert below.mix is None and layer_x(below.params) == 0
    above = frame(program, full("a", "b", 0.5, kind="cut"))
    assert above.mix is None and layer_x(above.params) == 50


def test_without_a_preview_scene_or_with_the_program_on_preview_the_bar_does_nothing() -> None:
    program = started(full("a", None, None))
    assert frame(program, full("a", None, 0.5)) == ProgramFrame("a", scenes.scene_params(full("a", None, 0.5), "a"))
    assert frame(program, full("a", "a", 0.5)).transition is None


@pytest.mark.parametrize("position", [0.0, 0.3, 0.5])
def test_a_take_goes_on_from_where_the_bar_stood(position: float) -> None:
    program = started(full("a", "b", None))
    frame(program, full("a", "b", position))
    taken = full("b", "a", None)  # what the server stores for a take: exchanged, the bar cleared
    frames = scenes.frame_count((1 - position) * 1000, FPS)
    progresses = []
    for k in range(1, frames):
        plan = frame(program, taken)
        assert plan.transition is not None and not plan.manual and plan.scene == "b"
        assert (plan.transition["frame"], plan.transition["frames"]) == (k, frames)
        assert plan.outgoing_params is not None and layer_x(plan.outgoing_params) == 0 and not plan.take_snapshot
        expected = position + (1 - position) * scenes.ease("ease_in", k / frames)
        assert plan.mix is not None and plan.mix.kind == "fade" and plan.mix.weight == pytest.approx(expected)
        progresses.append(plan.transition["progress"])
    assert progresses[0] > position and progresses == sorted(progresses), "no jump back, no jump ahead"
    plan = frame(program, taken)
    assert plan.mix is None and plan.transition is None and layer_x(plan.params) == 50


def test_a_take_at_the_end_of_the_bar_shows_the_new_program_without_a_transition() -> None:
    for kind, end in (("fade", 1.0), ("push", 1.0), ("cut", 0.5)):
        program = started(full("a", "b", None, kind=kind))
        frame(program, full("a", "b", end, kind=kind))
        plan = frame(program, full("b", "a", None, kind=kind))
        assert plan.mix is None and plan.transition is None and layer_x(plan.params) == 50, kind


def test_a_preview_change_under_a_held_bar_is_seen_at_once() -> None:
    program = started(full("a", "b", None))
    frame(program, full("a", "b", 0.4))
    plan = frame(program, full("a", "c", 0.4))
    assert plan.mix == scenes.MixGeometry("fade", weight=0.4) and layer_x(plan.params) == 100
    assert plan.transition is not None and plan.transition["to"] == "c"


def test_an_automatic_transition_under_a_held_bar_runs_from_the_screen_and_parks_the_bar() -> None:
    program = started(full("a", "b", None))
    frame(program, full("a", "b", 0.5))
    to_c = full("c", "b", 0.5, duration_ms=100)  # 3 frames
    first = frame(program, to_c)
    assert first.take_snapshot and first.outgoing_params is None, "from the held mix on screen"
    assert first.transition is not None and (first.transition["from"], first.transition["to"]) == ("a", "c")
    frame(program, to_c)
    for _ in range(3):
        plan = frame(program, to_c)
        assert plan.mix is None and plan.transition is None and layer_x(plan.params) == 100, "parked: c alone"
    moved = frame(program, full("c", "b", 0.6, duration_ms=100))
    assert moved.manual and moved.mix == scenes.MixGeometry("fade", weight=0.6), "the bar counts again once moved"


def test_the_position_is_checked_where_it_is() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        protocol_params.validate("video::compositor", {"transition_position": 1.5})
    assert info.value.path == "/transition_position" and "between 0 and 1" in str(info.value)
    assert protocol_params.with_defaults("video::compositor", {})["transition_position"] is None


def test_a_transition_given_with_a_change_counts_for_that_change_only() -> None:
    program = started(full("a", "b", None))
    # A cut this once (a tune's `_transition`): the new scene alone in the frame of the change.
    plan = program.next_frame(full("c", "b", None), FPS, can_snapshot=True, transition={"kind": "cut"})
    assert plan.mix is None and plan.transition is None and layer_x(plan.params) == 100
    # Given in a frame with no change of program, it counts for nothing, now or later.
    program.next_frame(full("c", "b", None), FPS, can_snapshot=True, transition={"kind": "cut"})
    plan = frame(program, full("a", "b", None))
    assert plan.transition is not None and plan.transition["kind"] == "fade", "the next change runs the params' fade"
    # A patch: the params' transition with what it names laid over it.
    program = started(full("a", "b", None))
    plan = program.next_frame(full("b", "a", None), FPS, can_snapshot=True, transition={"kind": "wipe", "duration_ms": 100})
    assert plan.transition is not None and (plan.transition["kind"], plan.transition["easing"]) == ("wipe", "ease_in")
    assert plan.transition["frames"] == scenes.frame_count(100, FPS)


def test_a_cut_of_the_scene_a_held_bar_mixes_in_is_a_cut() -> None:
    program = started(full("a", "b", None))
    frame(program, full("a", "b", 0.4))
    # What the panel's cut from preview sends: the scenes exchanged, the bar let go, a cut this once.
    plan = program.next_frame(full("b", "a", None), FPS, can_snapshot=True, transition={"kind": "cut"})
    assert plan.mix is None and plan.transition is None and layer_x(plan.params) == 50, "not the rest of the fade"
    assert frame(program, full("b", "a", None)).mix is None
