"""Scenes in the compositor's params (protocol/params.py) and the arithmetic of protocol/scenes.py, no GL."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from compositord.protocol import params, scenes
from compositord.protocol.errors import ErrorCode, RemoteProtocolError
from compositord.protocol.scenes import MixGeometry, TransitionSpec

COMP = "video::compositor"


def errors_of(value: Any) -> dict[str, str]:
    with pytest.raises(RemoteProtocolError) as info:
        params.validate(COMP, value)
    assert info.value.code is ErrorCode.INVALID_PARAMS
    return {e.path: e.message for e in info.value.errors}


TWO_SCENES = {
    "scenes": {
        "wide": {"layers": {"in_0": {"rect": {"x": 0, "y": 0, "width": 64, "height": 36}}}},
        "pip": {"layers": {"in_1": {"opacity": 0.5}}, "text_overlays": [{"id": "t", "text": "hi"}]},
    },
    "program_scene": "wide",
}


# --- params ----------------------------------------------------------------------------------


def test_params_without_scenes_are_unchanged_and_have_no_program_scene() -> None:
    durable = params.validate(COMP, {"layers": {"in_1": {"opacity": 0.25}}})
    assert durable == {"layers": {"in_1": {"opacity": 0.25}}}
    full = params.with_defaults(COMP, durable)
    assert (full["scenes"], full["program_scene"], full["preview_scene"]) == ({}, None, None)
    assert full["transition"] == {"kind": "cut", "duration_ms": 500, "easing": "linear", "direction": "left"}
    # The implicit scene is the top-level layout, as it was.
    assert scenes.scene_params(full, None) == full


def test_scenes_validate_and_fill_each_layout_like_the_top_level_one() -> None:
    durable = params.validate(COMP, TWO_SCENES)
    assert durable == TWO_SCENES
    full = params.with_defaults(COMP, durable)
    assert list(full["scenes"]["pip"]["layers"]) == ["in_0", "in_1"], "every slot, as the top-level layers"
    assert full["scenes"]["pip"]["layers"]["in_1"]["z_index"] == 1
    assert full["scenes"]["wide"]["text_overlays"] == []
    flat = scenes.scene_params(full, "pip")
    assert flat["layers"] == full["scenes"]["pip"]["layers"]
    assert flat["text_overlays"][0]["id"] == "t"
    assert (flat["width"], flat["fps"]) == (full["width"], full["fps"]), "the canvas is the node's"
    with pytest.raises(KeyError):
        scenes.scene_params(full, "missing")


def test_program_and_preview_must_name_scenes() -> None:
    assert errors_of({"scenes": {"a": {}}}) == {"/program_scene": "required when scenes is not empty"}
    assert errors_of({"scenes": {"a": {}}, "program_scene": "b", "preview_scene": "c"}) == {
        "/program_scene": "no scene 'b' in scenes (scenes: a)",
        "/preview_scene": "no scene 'c' in scenes (scenes: a)",
    }
    assert errors_of({"program_scene": "a"}) == {"/program_scene": "no scene 'a' in scenes (scenes: none)"}
    assert params.validate(COMP, {**TWO_SCENES, "preview_scene": "pip"})["preview_scene"] == "pip"


def test_with_scenes_the_top_level_layout_must_be_empty() -> None:
    found = errors_of({**TWO_SCENES, "layers": {"in_0": {}}, "text_overlays": [{"id": "x"}]})
    assert found == {
        "/layers": "must be empty when scenes is given: each scene has its own layers",
        "/text_overlays": "must be empty when scenes is given: each scene has its own text_overlays",
    }
    # Empty ones are what a merge patch that moves the layout into scenes leaves behind.
    assert params.validate(COMP, {**TWO_SCENES, "layers": {}, "image_overlays": []})


def test_scene_fields_are_checked_where_they_are() -> None:
    found = errors_of(
        {
            "num_inputs": 1,
            "scenes": {"a": {"layers": {"in_1": {}, "in_0": {"opacity": 3}}, "bogus": 1}, "-x": {}},
            "program_scene": "a",
        }
    )
    assert found == {
        "/scenes/a/layers/in_0/opacity": "must be between 0 and 1",
        "/scenes/a/layers/in_1": "no such input: num_inputs is 1 (pins in_0 .. in_0)",
        "/scenes/a/bogus": "unknown key",
        "/scenes/-x": "key must be a scene name (letters, digits, '_', '.', '-'; not '.' or '-' first)",
    }
    assert errors_of({"num_inputs": 1, "scenes": {"a": {"layers": {"in_1": {}}}}, "program_scene": "a"}) == {
        "/scenes/a/layers/in_1": "no such input: num_inputs is 1 (pins in_0 .. in_0)"
    }
    many = {"scenes": {f"s{n}": {} for n in range(scenes.MAX_SCENES + 1)}, "program_scene": "s0"}
    assert errors_of(many) == {"/scenes": f"must have at most {scenes.MAX_SCENES} entries"}


def test_transition_fields() -> None:
    given = {"transition": {"kind": "push", "duration_ms": 250, "easing": "ease_in_out", "direction": "up"}}
    assert params.validate(COMP, given) == given
    assert errors_of({"transition": {"kind": "dissolve", "duration_ms": -1, "easing": "bounce", "direction": "in"}}) == {
        "/transition/kind": "must be one of cut, fade, slide, push, wipe; got 'dissolve'",
        "/transition/duration_ms": f"must be between 0 and {scenes.MAX_DURATION_MS}",
        "/transition/easing": "must be one of linear, ease_in, ease_out, ease_in_out; got 'bounce'",
        "/transition/direction": "must be one of left, right, up, down; got 'in'",
    }
    full = params.with_defaults(COMP, params.validate(COMP, {"transition": {"kind": "fade"}}))
    assert TransitionSpec.from_params(full["transition"]) == TransitionSpec("fade", 500, "linear", "left")


def test_compositor_outputs_can_feed_compositors_but_not_in_a_cycle() -> None:
    def pipeline(*links: tuple[str, str, str, str]) -> dict[str, Any]:
        return {
            "nodes": {name: {"kind": COMP, "params": {}} for name in ("a", "b", "c")},
            "connections": [{"from_node": f, "from_pin": fp, "to_node": t, "to_pin": tp} for f, fp, t, tp in links],
        }

    assert params.validate_pipeline(pipeline(("a", "out", "b", "in_0"), ("a", "preview", "c", "in_1"), ("b", "out", "c", "in_0")))
    with pytest.raises(RemoteProtocolError) as info:
        params.validate_pipeline(pipeline(("a", "out", "b", "in_0"), ("b", "preview", "c", "in_0"), ("c", "out", "a", "in_1")))
    assert {e.path: e.message for e in info.value.errors} == {"/connections": "connections form a cycle: a -> b -> c -> a"}


# --- easing, frames, mix geometry ----------------------------------------------------------------


@pytest.mark.parametrize("easing", scenes.EASINGS)
def test_easings_run_from_0_to_1_without_going_back(easing: str) -> None:
    values = [scenes.ease(easing, k / 50) for k in range(51)]
    assert values[0] == 0.0 and values[-1] == 1.0
    assert all(b >= a for a, b in itertools.pairwise(values))
    assert scenes.ease(easing, -1) == 0.0 and scenes.ease(easing, 2) == 1.0


def test_easing_shapes() -> None:
    assert scenes.ease("linear", 0.25) == 0.25
    assert scenes.ease("ease_in", 0.5) == 0.25 < 0.5
    assert scenes.ease("ease_out", 0.5) == 0.75 > 0.5
    assert scenes.ease("ease_in_out", 0.25) == 0.125 and scenes.ease("ease_in_out", 0.5) == 0.5
    assert scenes.ease("ease_in_out", 0.75) == 0.875
    with pytest.raises(ValueError):
        scenes.ease("bounce", 0.5)


def test_frame_count_counts_output_frames() -> None:
    assert scenes.frame_count(500, 30) == 15
    assert scenes.frame_count(1000, 60) == 60
    assert scenes.frame_count(0, 30) == 1 and scenes.frame_count(10, 30) == 1


@pytest.mark.parametrize("direction", scenes.DIRECTIONS)
@pytest.mark.parametrize("kind", ["slide", "push"])
def test_moving_transitions_move_whole_pixels_and_abut(kind: str, direction: str) -> None:
    width, height = 160, 90
    spec = TransitionSpec(kind, 500, "linear", direction)
    start = scenes.mix_geometry(spec, 0.0, width, height)
    end = scenes.mix_geometry(spec, 1.0, width, height)
    assert end.to_offset == (0, 0) and end.to_region == (0, 0, width, height)
    assert start.to_region[2] - start.to_region[0] == 0 or start.to_region[3] - start.to_region[1] == 0, "nothing yet"
    for eased in (0.1, 0.37, 0.5, 0.9):
        mix = scenes.mix_geometry(spec, eased, width, height)
        assert all(isinstance(v, int) for v in (*mix.to_offset, *mix.from_offset, *mix.to_region))
        extent = width if direction in ("left", "right") else height
        moved = round(eased * extent)
        # The incoming picture is `extent - moved` pixels short of its place, against the motion.
        expected_to = {
            "left": (extent - moved, 0),
            "right": (moved - extent, 0),
            "up": (0, extent - moved),
            "down": (0, moved - extent),
        }[direction]
        assert mix.to_offset == expected_to
        x0, y0, x1, y1 = mix.to_region
        assert (x0, y0) == (max(0, expected_to[0]), max(0, expected_to[1]))
        assert (x1, y1) == (min(width, expected_to[0] + width), min(height, expected_to[1] + height))
        if kind == "slide":
            assert mix.from_offset == (0, 0)
        else:
            # Push: the outgoing picture is exactly one canvas ahead of the incoming one.
            step = (width, 0) if direction in ("left", "right") else (0, height)
            sign = 1 if direction in ("right", "down") else -1
            assert mix.from_offset == (expected_to[0] + sign * step[0], expected_to[1] + sign * step[1])


@pytest.mark.parametrize(
    ("direction", "region_at_quarter"),
    [("left", (120, 0, 160, 90)), ("right", (0, 0, 40, 90)), ("up", (0, 67, 160, 90)), ("down", (0, 0, 160, 23))],
)
def test_wipe_edge(direction: str, region_at_quarter: tuple[int, int, int, int]) -> None:
    # A quarter of 160 is 40 pixels; of 90, 22.5: halves round up.
    mix = scenes.mix_geometry(TransitionSpec("wipe", 500, "linear", direction), 0.25, 160, 90)
    assert mix == MixGeometry("move", to_region=region_at_quarter)


def test_fade_weight_is_the_eased_progress_and_cut_has_no_mix() -> None:
    assert scenes.mix_geometry(TransitionSpec("fade"), 0.3, 10, 10) == MixGeometry("fade", weight=0.3)
    with pytest.raises(ValueError):
        scenes.mix_geometry(TransitionSpec("cut"), 0.3, 10, 10)


# --- animated edits ------------------------------------------------------------------------------


def test_animate_spec() -> None:
    assert scenes.parse_animate({"duration_ms": 300}, "/a") == scenes.AnimateSpec(300, "linear")
    assert scenes.parse_animate({"duration_ms": 300.0, "easing": "ease_out"}, "/a").easing == "ease_out"
    for bad, paths in [
        ([], {"/a"}),
        ({}, {"/a/duration_ms"}),
        ({"duration_ms": 1.5, "easing": "x", "speed": 2}, {"/a/duration_ms", "/a/easing", "/a/speed"}),
        ({"duration_ms": True}, {"/a/duration_ms"}),
        ({"duration_ms": scenes.MAX_DURATION_MS + 1}, {"/a/duration_ms"}),
    ]:
        with pytest.raises(RemoteProtocolError) as info:
            scenes.parse_animate(bad, "/a")
        assert info.value.code is ErrorCode.INVALID_PARAMS
        assert {e.path for e in info.value.errors} == paths


def test_animatable_values_are_the_numbers_of_layers_and_overlays() -> None:
    for path in (
        "/layers/in_1/opacity",
        "/layers/in_1/rect/x",
        "/scenes/a/layers/in_0/rect/height",
        "/scenes/a/layers/in_0/crop_zoom",
        "/text_overlays/0/rotation_degrees",
        "/image_overlays/2/rect/y",
    ):
        assert scenes.animatable(path), path
    for path in ("/width", "/fps", "/layers/in_1/z_index", "/layers/in_1/visible", "/text_overlays/0/font_size", "/rect"):
        assert not scenes.animatable(path), path


def test_changed_leaves_descend_into_lists() -> None:
    before = {"layers": {"in_0": {"opacity": 1.0}}, "text_overlays": [{"id": "a", "rect": {"x": 1}}]}
    after = {"layers": {"in_0": {"opacity": 0.5}, "in_1": {"z_index": 3}}, "text_overlays": [{"id": "a", "rect": {"x": 2}}]}
    assert scenes.changed_leaves(before, after) == {"/layers/in_0/opacity", "/layers/in_1/z_index", "/text_overlays/0/rect/x"}
    assert scenes.changed_leaves(after, after) == set()
