"""Node-kind schemas: every rule of protocol/params.py, its edges, and docs/PARAMS.md kept true."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest

from compositord.protocol import params
from compositord.protocol.errors import ErrorCode, LocalProtocolError, RemoteProtocolError

COMP = "video::compositor"
REPO = Path(__file__).resolve().parent.parent


def errors_of(kind: str, value: Any) -> dict[str, str]:
    """Path -> message of every error ``validate`` reports (and it must report some)."""
    with pytest.raises(RemoteProtocolError) as info:
        params.validate(kind, value)
    err = info.value
    assert err.code is ErrorCode.INVALID_PARAMS
    assert err.errors, "every refusal lists its field errors"
    assert err.path == err.errors[0].path
    return {e.path: e.message for e in err.errors}


def pipeline_errors(doc: Any) -> dict[str, str]:
    with pytest.raises(RemoteProtocolError) as info:
        params.validate_pipeline(doc)
    assert info.value.code is ErrorCode.INVALID_PARAMS
    return {e.path: e.message for e in info.value.errors}


# --- validate: normalization, never defaults ------------------------------------------


def test_empty_params_are_valid_for_kinds_without_required_fields_and_stay_empty() -> None:
    for kind in params.NODE_KINDS:
        required = [k for k, s in params.KINDS[kind].schema.fields.items() if s.default is params.REQUIRED]
        if required:
            assert set(errors_of(kind, {})) == {f"/{k}" for k in required}
        else:
            assert params.validate(kind, {}) == {}


def test_validate_normalizes_without_inserting_defaults() -> None:
    given = {
        "background": "#ff00aa",
        "fps": 25.0,
        "layers": {"in_1": {"rect": {"x": 10.5, "y": -2.5, "width": 99.4, "height": 50.6}, "opacity": 1}},
        "text_overlays": [{"id": "t", "rect": {"x": 3.49}, "font_size": 20}],
    }
    before = copy.deepcopy(given)
    result = params.validate(COMP, given)
    assert given == before, "validate must not change its input"
    assert result == {
        "background": "#FF00AAFF",
        "fps": 25,
        "layers": {"in_1": {"rect": {"x": 11, "y": -2, "width": 99, "height": 51}, "opacity": 1.0}},
        "text_overlays": [{"id": "t", "rect": {"x": 3}, "font_size": 20.0}],
    }
    assert type(result["fps"]) is int and type(result["layers"]["in_1"]["opacity"]) is float
    assert params.validate(COMP, result) == result, "durable params are a fixed point"


def test_null_of_an_auto_field_means_absent() -> None:
    assert params.validate(COMP, {"layers": {"in_0": {"rect": None, "z_index": None}}}) == {"layers": {"in_0": {}}}
    assert params.validate("sink::window", {"width": None}) == {}


def test_null_of_a_field_with_a_default_is_refused() -> None:
    assert errors_of(COMP, {"width": None}) == {"/width": "expected a number, got null"}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (True, "expected a number, got a boolean"),
        ("1280", "expected a number, got a string"),
        ([1280], "expected a number, got an array"),
        ({}, "expected a number, got an object"),
        (float("nan"), "must be a finite number"),
        (float("inf"), "must be a finite number"),
        (-math.inf, "must be a finite number"),
        (0, "must be between 1 and 7680"),
        (7681, "must be between 1 and 7680"),
        (10**40, "must be between 1 and 7680"),
        (640.5, "expected a whole number"),
    ],
)
def test_integer_fields_refuse_wrong_values(value: Any, message: str) -> None:
    assert errors_of(COMP, {"width": value}) == {"/width": message}


@pytest.mark.parametrize("value", [1, 7680, 640.0])
def test_integer_bounds_are_inclusive(value: Any) -> None:
    assert params.validate(COMP, {"width": value}) == {"width": int(value)}


@pytest.mark.parametrize(
    ("value", "ok"),
    [(0, True), (1, True), (0.5, True), (-0.0001, False), (1.0001, False), (False, False), (math.nan, False), (10**400, False)],
)
def test_number_range_and_types(value: Any, ok: bool) -> None:
    doc = {"layers": {"in_0": {"opacity": value}}}
    if ok:
        assert params.validate(COMP, doc) == {"layers": {"in_0": {"opacity": float(value)}}}
    else:
        assert set(errors_of(COMP, doc)) == {"/layers/in_0/opacity"}


def test_every_layer_field_range() -> None:
    bad_layer = {
        "aspect_fit": 1,
        "z_index": 1001,
        "rotation_degrees": -361,
        "mirror_horizontal": "no",
        "mirror_vertical": None,
        "crop_zoom": 0.99,
        "crop_x": 1.5,
        "crop_y": -1,
        "crop_shape": "square",
        "visible": 0,
        "rect": {"x": 0, "y": 0, "width": 0, "height": 1e9},
    }
    found = errors_of(COMP, {"layers": {"in_0": bad_layer}})
    expected = {f"/layers/in_0/{k}" for k in bad_layer if k != "rect"} | {"/layers/in_0/rect/width", "/layers/in_0/rect/height"}
    assert set(found) == expected
    assert found["/layers/in_0/crop_shape"] == "must be one of rect, circle; got 'square'"
    assert found["/layers/in_0/aspect_fit"] == "expected true or false, got a number"


def test_layer_rect_needs_all_four_values() -> None:
    found = errors_of(COMP, {"layers": {"in_0": {"rect": {"x": 1}}}})
    assert found == {p: "required" for p in ("/layers/in_0/rect/y", "/layers/in_0/rect/width", "/layers/in_0/rect/height")}


def test_unknown_keys_are_errors_at_every_depth() -> None:
    found = errors_of(
        COMP,
        {
            "widht": 1,
            "layers": {"in_0": {"opacty": 1, "rect": {"x": 0, "y": 0, "width": 1, "height": 1, "w": 1}}},
            "text_overlays": [{"id": "a", "colour": "#fff"}],
        },
    )
    assert found == {
        "/widht": "unknown key",
        "/layers/in_0/opacty": "unknown key",
        "/layers/in_0/rect/w": "unknown key",
        "/text_overlays/0/colour": "unknown key",
    }


def test_every_error_is_reported_with_its_path() -> None:
    found = errors_of(
        COMP,
        {
            "width": True,
            "height": float("nan"),
            "fps": 1e400,
            "background": "red",
            "layers": {"in_3": {"opacity": 2}, "x": {}},
            "text_overlays": [{"id": "a"}, {"id": "a", "rect": {"x": "1"}}],
        },
    )
    assert set(found) == {
        "/width",
        "/height",
        "/fps",
        "/background",
        "/layers/in_3/opacity",
        "/layers/in_3",
        "/layers/x",
        "/text_overlays/1/rect/x",
        "/text_overlays/1/id",
    }
    assert found["/layers/in_3"] == "no such input: num_inputs is 2 (pins in_0 .. in_1)"
    assert found["/text_overlays/1/id"] == "duplicate id 'a' (also at index 0)"


def test_message_names_count_and_first_error() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        params.validate(COMP, {"width": 0, "height": 0})
    assert info.value.message == "2 errors; first: /width: must be between 1 and 7680"
    payload = info.value.to_payload()
    assert payload["code"] == "invalid_params" and payload["path"] == "/width" and len(payload["errors"]) == 2


def test_keys_with_slash_and_tilde_are_escaped_in_paths() -> None:
    assert set(errors_of(COMP, {"a/b~c": 1})) == {"/a~1b~0c"}


@pytest.mark.parametrize("value", ["#fff", "#GGGGGG", "FFFFFF", "#FFFFFFF", "#FFFFFFFFF", 0xFFFFFF, None, " #FFFFFF"])
def test_colors_refused(value: Any) -> None:
    assert errors_of(COMP, {"background": value}) == {"/background": 'expected a colour "#RRGGBB" or "#RRGGBBAA"'}


@pytest.mark.parametrize(("value", "stored"), [("#abcdef", "#ABCDEFFF"), ("#ABCDEF80", "#ABCDEF80"), ("#00000000", "#00000000")])
def test_colors_stored_as_rrggbbaa(value: str, stored: str) -> None:
    assert params.validate(COMP, {"background": value}) == {"background": stored}


def test_layers_are_keyed_by_existing_input_pins() -> None:
    assert params.validate(COMP, {"num_inputs": 16, "layers": {"in_15": {}}}) == {"num_inputs": 16, "layers": {"in_15": {}}}
    assert errors_of(COMP, {"num_inputs": 0, "layers": {"in_0": {}}}) == {"/layers/in_0": "no such input: num_inputs is 0"}
    assert set(errors_of(COMP, {"layers": {"in_01": {}, "in_100": {}, "IN_0": {}, "in_-1": {}}})) == {
        "/layers/in_01",
        "/layers/in_100",
        "/layers/IN_0",
        "/layers/in_-1",
    }
    assert errors_of(COMP, {"num_inputs": 17}) == {"/num_inputs": "must be between 0 and 16"}


def test_invalid_num_inputs_does_not_add_slot_errors() -> None:
    assert set(errors_of(COMP, {"num_inputs": "many", "layers": {"in_9": {}}})) == {"/num_inputs"}


@pytest.mark.parametrize("fmt", ["nv12", "i420"])
def test_yuv_output_needs_even_size(fmt: str) -> None:
    assert params.validate(COMP, {"output_format": fmt, "width": 640, "height": 360}) == {
        "output_format": fmt,
        "width": 640,
        "height": 360,
    }
    found = errors_of(COMP, {"output_format": fmt, "width": 641, "height": 361})
    assert set(found) == {"/width", "/height"} and "even" in found["/width"]
    # The default size 1280x720 is even; an odd default-free height is caught too.
    assert set(errors_of(COMP, {"output_format": fmt, "height": 1})) == {"/height"}
    assert params.validate(COMP, {"output_format": "rgba8", "width": 641}) == {"output_format": "rgba8", "width": 641}


def test_push_pixel_format_needs_even_size() -> None:
    assert set(errors_of("video::push", {"pixel_format": "nv12", "width": 3})) == {"/width"}
    assert params.validate("video::push", {"pixel_format": "rgba8", "width": 3}) == {"pixel_format": "rgba8", "width": 3}


def test_overlay_lists() -> None:
    too_many = [{"id": str(i)} for i in range(33)]
    assert errors_of(COMP, {"text_overlays": too_many}) == {"/text_overlays": "must have at most 32 items"}
    assert params.validate(COMP, {"text_overlays": too_many[:32]})["text_overlays"] == too_many[:32]
    found = errors_of(
        COMP, {"text_overlays": [{"id": ""}, {"id": "x" * 65}, {"text": "no id"}, 5, {"id": "t", "text": "y" * 1001}]}
    )
    assert found == {
        "/text_overlays/0/id": "must not be empty",
        "/text_overlays/1/id": "must have at most 64 characters",
        "/text_overlays/2/id": "required",
        "/text_overlays/3": "expected an object, got a number",
        "/text_overlays/4/text": "must have at most 1000 characters",
    }
    assert errors_of(COMP, {"image_overlays": {}}) == {"/image_overlays": "expected an array, got an object"}
    # ids are unique per list: a text and an image overlay may share one
    both = {"text_overlays": [{"id": "a"}], "image_overlays": [{"id": "a", "asset_path": "logo.png"}]}
    assert params.validate(COMP, both) == both


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("", "must not be empty"),
        ("/etc/passwd", "must be a relative path"),
        ("C:logo.png", "must be a relative path"),
        ("..", "must not contain a '..' component"),
        ("a/../../b.png", "must not contain a '..' component"),
        ("a\\b.png", "must use / as separator, not \\"),
        ("a\x00.png", "must not contain a NUL character"),
        ("a" * 1025, "must have at most 1024 characters"),
        (7, "expected a string, got a number"),
    ],
)
def test_asset_paths_refused(path: Any, message: str) -> None:
    doc = {"image_overlays": [{"id": "i", "asset_path": path}]}
    assert errors_of(COMP, doc) == {"/image_overlays/0/asset_path": message}
    assert errors_of("video::image", {"asset_path": path}) == {"/asset_path": message}


@pytest.mark.parametrize("path", ["logo.png", "a/b/c.png", "a..b.png", "./x.png", ".hidden/x.png"])
def test_asset_paths_accepted(path: str) -> None:
    assert params.validate("video::image", {"asset_path": path}) == {"asset_path": path}


def test_strings_refuse_nul_and_wrong_types() -> None:
    assert errors_of(COMP, {"text_overlays": [{"id": "a\x00"}]}) == {"/text_overlays/0/id": "must not contain a NUL character"}
    assert errors_of("sink::window", {"title": 5}) == {"/title": "expected a string, got a number"}


def test_unknown_kind_refused() -> None:
    for kind in ("video::nope", "", None, 3):
        found = errors_of(kind, {})  # type: ignore[arg-type]  # a wrong type on purpose: the check under test
        assert list(found) == [""] and found[""].startswith("unknown node kind")


def test_non_json_python_values_are_named_by_type() -> None:
    assert errors_of(COMP, {"width": (1,)}) == {"/width": "expected a number, got tuple"}


def test_params_must_be_an_object() -> None:
    not_objects: list[object] = [None, [], "x", 1]
    for value in not_objects:
        assert errors_of(COMP, value) == {"": f"expected an object, got {params._type_name(value)}"}


# --- other kinds --------------------------------------------------------------------------


def test_sink_file_container_from_extension_and_codec_compatibility() -> None:
    assert params.validate("sink::file", {"path": "out/a.MP4"}) == {"path": "out/a.MP4"}
    assert params.validate("sink::file", {"path": "a.webm", "codec": "vp9"}) == {"path": "a.webm", "codec": "vp9"}
    assert params.validate("sink::file", {"path": "a.bin", "container": "mkv"}) == {"path": "a.bin", "container": "mkv"}
    assert errors_of("sink::file", {"path": "a.avi"}) == {
        "/container": "required: the path's extension .avi names no container (mp4, webm, mkv)"
    }
    assert errors_of("sink::file", {"path": "dir.d/out"}) == {
        "/container": "required: the path's extension (none) names no container (mp4, webm, mkv)"
    }
    assert errors_of("sink::file", {"path": "a.webm"}) == {"/codec": "webm cannot hold h264; use vp9 or av1"}
    assert errors_of("sink::file", {"path": "a.mp4", "container": "webm", "codec": "h264"}) == {
        "/codec": "webm cannot hold h264; use vp9 or av1"
    }
    # A bad codec is reported once, not again as an incompatibility.
    assert errors_of("sink::file", {"path": "a.webm", "codec": "mpeg2"}) == {
        "/codec": "must be one of h264, vp9, av1; got 'mpeg2'"
    }
    assert set(errors_of("sink::file", {"path": "a.mp4", "bitrate_kbps": 99, "preset": "insane"})) == {"/bitrate_kbps", "/preset"}


def test_sink_stream_url() -> None:
    assert params.validate("sink::stream", {"url": "udp://127.0.0.1:5000?pkt_size=1316"}) == {
        "url": "udp://127.0.0.1:5000?pkt_size=1316"
    }
    assert params.validate("sink::stream", {"url": "rtmp://localhost/app/key", "format": "flv"})["format"] == "flv"
    assert errors_of("sink::stream", {"url": "http://x"}) == {"/url": "must be a udp://, srt://, rtmp://, rtmps:// or tcp:// URL"}
    assert errors_of("sink::stream", {}) == {"/url": "required"}
    assert errors_of("sink::stream", {"url": "rtmp://localhost/app/key"}) == {"/format": "rtmp:// carries FLV: set format to flv"}
    assert errors_of("sink::stream", {"url": "rtmps://localhost/app/key", "format": "mpegts"}) == {
        "/format": "rtmps:// carries FLV: set format to flv"
    }


def test_other_kinds_ranges() -> None:
    assert set(
        errors_of("video::colorbars", {"width": 0, "pattern": "zebra", "color": "x", "animated": "yes", "timestamp": 1})
    ) == {
        "/width",
        "/pattern",
        "/color",
        "/animated",
        "/timestamp",
    }
    assert set(errors_of("video::file", {"path": "", "loop": 1, "seek_seconds": -1})) == {"/path", "/loop", "/seek_seconds"}
    assert set(errors_of("sink::preview", {"max_width": 15, "quality": 101, "max_fps": 0.05})) == {
        "/max_width",
        "/quality",
        "/max_fps",
    }
    assert params.validate("sink::preview", {"max_width": 1920, "quality": 1, "max_fps": 0.1}) == {
        "max_width": 1920,
        "quality": 1,
        "max_fps": 0.1,
    }
    assert params.validate("sink::y4m", {"path": "-"}, context=params.ONE_SHOT) == {"path": "-"}


# --- with_defaults / defaults ----------------------------------------------------------------


def test_compositor_defaults() -> None:
    full = params.defaults(COMP)
    assert {k: v for k, v in full.items() if k != "layers"} == {
        "width": 1280,
        "height": 720,
        "fps": 30,
        "background": "#000000FF",
        "num_inputs": 2,
        "color_matrix": "bt709",
        "output_format": "rgba8",
        "text_overlays": [],
        "image_overlays": [],
        "scenes": {},
        "program_scene": None,
        "preview_scene": None,
        "transition": {"kind": "cut", "duration_ms": 500, "easing": "linear", "direction": "left"},
        "transition_position": None,
        "audio": {"enabled": True, "sample_rate": 48000, "channels": "stereo"},
    }
    assert list(full["layers"]) == ["in_0", "in_1"]
    assert full["layers"]["in_1"] == {
        "rect": None,
        "aspect_fit": True,
        "opacity": 1.0,
        "z_index": 1,
        "rotation_degrees": 0.0,
        "mirror_horizontal": False,
        "mirror_vertical": False,
        "crop_zoom": 1.0,
        "crop_x": 0.5,
        "crop_y": 0.5,
        "crop_shape": "rect",
        "visible": True,
        "audio": {"gain_db": 0.0, "mute": False, "follow_video": False},
    }
    assert full["layers"]["in_0"]["z_index"] == 0


def test_with_defaults_fills_nested_entries_and_keeps_given_values() -> None:
    durable = params.validate(
        COMP,
        {
            "num_inputs": 3,
            "layers": {"in_2": {"opacity": 0.5, "z_index": -4}, "in_0": {"rect": {"x": 1, "y": 2, "width": 3, "height": 4}}},
            "text_overlays": [{"id": "t", "rect": {"y": 5}}],
            "image_overlays": [{"id": "i", "asset_path": "a.png"}],
        },
    )
    before = copy.deepcopy(durable)
    full = params.with_defaults(COMP, durable)
    assert durable == before, "with_defaults must not change its input"
    assert list(full["layers"]) == ["in_0", "in_1", "in_2"], "every slot, in slot order"
    assert full["layers"]["in_0"]["rect"] == {"x": 1, "y": 2, "width": 3, "height": 4}
    assert full["layers"]["in_1"]["z_index"] == 1 and full["layers"]["in_1"]["rect"] is None
    assert full["layers"]["in_2"]["z_index"] == -4 and full["layers"]["in_2"]["opacity"] == 0.5
    text = full["text_overlays"][0]
    assert text == {
        "id": "t",
        "text": "",
        "rect": {"x": 0, "y": 5, "width": None, "height": None},
        "color": "#FFFFFFFF",
        "font_size": 32.0,
        "font": "default",
        "opacity": 1.0,
        "rotation_degrees": 0.0,
        "z_index": 1000,
        "mirror_horizontal": False,
        "mirror_vertical": False,
    }
    image = full["image_overlays"][0]
    assert image["rect"] == {"x": 0, "y": 0, "width": None, "height": None} and image["z_index"] == 1000
    # mutating the result does not leak into the schema's defaults
    full["text_overlays"][0]["rect"]["x"] = 99
    assert params.with_defaults(COMP, durable)["text_overlays"][0]["rect"]["x"] == 0


def test_with_defaults_output_validates_back_to_the_same_meaning() -> None:
    durable = {"layers": {"in_1": {"opacity": 0.25}}, "text_overlays": [{"id": "x"}]}
    full = params.with_defaults(COMP, durable)
    assert params.with_defaults(COMP, params.validate(COMP, full)) == full


def test_defaults_of_every_kind_have_every_non_required_key() -> None:
    for kind in params.NODE_KINDS:
        schema = params.KINDS[kind].schema
        assert set(params.defaults(kind)) == {k for k, s in schema.fields.items() if s.default is not params.REQUIRED}
    assert params.defaults("sink::file")["container"] is None
    assert params.defaults("sink::preview") == {"max_width": 320, "quality": 75, "max_fps": 2.0}


def test_local_misuse_of_an_unknown_kind_is_a_local_error() -> None:
    for call in (lambda: params.defaults("x"), lambda: params.with_defaults("x", {}), lambda: params.output_pins("x")):
        with pytest.raises(LocalProtocolError):
            call()


def test_pins_and_roles() -> None:
    assert params.role(COMP) == params.COMPOSITOR and params.role("sink::y4m") == params.SINK
    assert params.output_pins("video::colorbars") == ("out",) and params.output_pins(COMP) == ("out", "preview")
    assert params.output_pins("sink::file") == ()
    assert params.input_pins(COMP, {}) == ("in_0", "in_1")
    assert params.input_pins(COMP, {"num_inputs": 0}) == ()
    assert params.input_pins("sink::window", {}) == ("in",)
    assert params.input_pins("video::image", {"asset_path": "a.png"}) == ()


# --- pipelines ---------------------------------------------------------------------------


def demo_pipeline() -> dict[str, Any]:
    return {
        "nodes": {
            "bars": {"kind": "video::colorbars", "params": {"width": 1280, "height": 720}},
            "cam": {"kind": "video::push"},
            "comp": {"kind": COMP, "params": {"layers": {"in_1": {"opacity": 0.8}}}},
            "out": {"kind": "sink::y4m", "params": {"path": "out.y4m"}},
        },
        "connections": [
            {"from_node": "bars", "from_pin": "out", "to_node": "comp", "to_pin": "in_0"},
            {"from_node": "cam", "from_pin": "out", "to_node": "comp", "to_pin": "in_1"},
            {"from_node": "comp", "from_pin": "out", "to_node": "out", "to_pin": "in"},
        ],
    }


def test_valid_pipeline_is_normalized() -> None:
    doc = demo_pipeline()
    result = params.validate_pipeline(doc)
    assert result["nodes"]["cam"] == {"kind": "video::push", "params": {}}
    assert result["nodes"]["comp"]["params"] == {"layers": {"in_1": {"opacity": 0.8}}}
    assert result["connections"] == doc["connections"]
    assert params.validate_pipeline({}) == {"nodes": {}, "connections": []}


def test_pipeline_reports_every_error_with_a_full_path() -> None:
    doc = demo_pipeline()
    doc["nodes"]["bars"]["params"]["width"] = 0
    doc["nodes"]["comp"]["params"]["layers"]["in_1"]["opacity"] = 3
    doc["nodes"]["bad id!"] = {"kind": "video::push"}
    doc["nodes"]["ghost"] = {"kind": "video::ghost"}
    doc["nodes"]["nokind"] = {"params": {}}
    doc["nodes"]["extra"] = {"kind": "sink::y4m", "colour": 1}
    doc["nodes"]["str"] = {"kind": "sink::y4m", "params": "x"}
    doc["nodes"]["long"] = {"kind": "k" * 65}
    doc["extra"] = 1
    found = pipeline_errors(doc)
    assert set(found) == {
        "/nodes/bars/params/width",
        "/nodes/comp/params/layers/in_1/opacity",
        "/nodes/bad id!",
        "/nodes/ghost/kind",
        "/nodes/nokind/kind",
        "/nodes/extra/colour",
        "/nodes/extra/params/path",
        "/nodes/str/params",
        "/nodes/long/kind",
        "/extra",
    }
    assert found["/nodes/nokind/kind"] == "required"
    assert found["/nodes/long/kind"] == "must have at most 64 characters", "one error per field"


def test_pipeline_connection_errors() -> None:
    doc = demo_pipeline()
    doc["nodes"]["c2"] = {"kind": COMP, "params": {"num_inputs": 1}}
    doc["connections"] += [
        {"from_node": "bars", "from_pin": "output", "to_node": "c2", "to_pin": "in_0"},
        {"from_node": "cam", "from_pin": "out", "to_node": "c2", "to_pin": "in_1"},
        {"from_node": "nobody", "from_pin": "out", "to_node": "c2", "to_pin": "in_0"},
        {"from_node": "out", "from_pin": "out", "to_node": "bars", "to_pin": "in"},
        {"from_node": "cam", "from_pin": "out", "to_node": "comp", "to_pin": "in_1"},
        {"from_node": "c2", "from_pin": "out", "to_node": "c2", "to_pin": "in_0"},
        {"from_node": "cam", "to_node": "c2", "to_pin": "in_0"},
        "not a connection",
    ]
    found = pipeline_errors(doc)
    assert found == {
        "/connections/3/from_pin": "video::colorbars node 'bars' has no output pin 'output'; its output pins are out",
        "/connections/4/to_pin": "video::compositor node 'c2' has no input pin 'in_1'; its input pins are in_0",
        "/connections/5/from_node": "no node 'nobody' of a known kind in this pipeline",
        "/connections/6/from_pin": "sink::y4m node 'out' has no output pin 'out'; it has no output pins",
        "/connections/6/to_pin": "video::colorbars node 'bars' has no input pin 'in'; it has no input pins",
        "/connections/7/to_pin": "input already fed by /connections/1",
        "/connections/8/to_node": "a node cannot feed itself",
        "/connections/9/from_pin": "required",
        "/connections/10": "expected an object, got a string",
    }


def test_connections_into_a_compositor_with_invalid_params_are_not_checked_twice() -> None:
    doc = demo_pipeline()
    doc["nodes"]["comp"]["params"] = {"num_inputs": -1}
    assert set(pipeline_errors(doc)) == {"/nodes/comp/params/num_inputs"}


def test_pipeline_cycle_refused() -> None:
    doc: dict[str, Any] = {
        "nodes": {"a": {"kind": COMP}, "b": {"kind": COMP}, "c": {"kind": COMP}},
        "connections": [
            {"from_node": "a", "from_pin": "out", "to_node": "b", "to_pin": "in_0"},
            {"from_node": "b", "from_pin": "out", "to_node": "c", "to_pin": "in_0"},
            {"from_node": "c", "from_pin": "out", "to_node": "a", "to_pin": "in_0"},
        ],
    }
    found = pipeline_errors(doc)
    # Compositors may feed compositors (nesting), but never in a cycle.
    assert found == {"/connections": "connections form a cycle: a -> b -> c -> a"}


def test_non_string_keys_from_yaml_are_errors_not_crashes() -> None:
    found = pipeline_errors({"nodes": {1: {"kind": "video::push"}, "ok": {"kind": "video::push", "params": {2: 1}}}})
    assert found == {"/nodes/1": "key must be a node id (letters, digits, '_', '.', '-')", "/nodes/ok/params/2": "unknown key"}
    assert errors_of(COMP, {"layers": {0: {}}}) == {"/layers/0": "key must be an input pin `in_N` with N < num_inputs"}


def test_pipeline_shape_errors() -> None:
    assert pipeline_errors([]) == {"": "expected an object, got an array"}
    assert pipeline_errors({"nodes": [], "connections": {}}) == {
        "/nodes": "expected an object, got an array",
        "/connections": "expected an array, got an object",
    }
    many = {"nodes": {f"n{i}": {"kind": "video::push"} for i in range(params.MAX_NODES + 1)}}
    assert pipeline_errors(many) == {"/nodes": f"must have at most {params.MAX_NODES} nodes"}


# --- docs/PARAMS.md -------------------------------------------------------------------------


def test_params_doc_is_the_generated_reference() -> None:
    doc = (REPO / "docs" / "PARAMS.md").read_text(encoding="utf-8")
    assert doc == params.reference_markdown(), "docs/PARAMS.md is stale: regenerate it (command at its top)"


def test_params_doc_lists_every_field_of_every_kind() -> None:
    doc = (REPO / "docs" / "PARAMS.md").read_text(encoding="utf-8")
    for kind in params.NODE_KINDS:
        section = doc.split(f"## `{kind}`", 1)[1].split("\n## ", 1)[0]
        for key in params.KINDS[kind].schema.fields:
            assert f"| `{key}` |" in section, f"{kind}.{key} missing from docs/PARAMS.md"
    for key in ("rect.x", "crop_zoom", "asset_path", "font_size"):
        assert f".{key}` |" in doc


def test_stream_in_refuses_srt_and_listening_beyond_what_the_operator_allows() -> None:
    from compositord.protocol.destinations import StreamDestinations
    from compositord.protocol.params import ValidationContext

    assert params.validate("av::stream_in", {"url": "udp://127.0.0.1:5000"}) == {"url": "udp://127.0.0.1:5000"}
    with pytest.raises(RemoteProtocolError) as srt:
        params.validate("av::stream_in", {"url": "srt://127.0.0.1:9000"})
    assert [(e.path, "no SRT protocol" in e.message) for e in srt.value.errors] == [("/url", True)]
    with pytest.raises(RemoteProtocolError) as wide:
        params.validate("av::stream_in", {"url": "rtmp://0.0.0.0:1935/live/key", "listen": True})
    assert [e.path for e in wide.value.errors] == ["/url"] and "allowed_ingest_listen" in wide.value.errors[0].message
    operator = ValidationContext(ingest_listen=StreamDestinations.parse(["rtmp://0.0.0.0:1935"]))
    params.validate("av::stream_in", {"url": "rtmp://0.0.0.0:1935/live/key", "listen": True}, context=operator)
    # A pull binds nothing: the listen allowlist does not apply to it (the sources allowlist does, below).
    pulls = ValidationContext(ingest_sources=StreamDestinations.parse(["rtmp://203.0.113.5"]))
    params.validate("av::stream_in", {"url": "rtmp://203.0.113.5/live/key"}, context=pulls)
    with pytest.raises(RemoteProtocolError) as pull_listen:
        params.validate("av::stream_in", {"url": "https://example.com/live.m3u8", "listen": True})
    assert [e.path for e in pull_listen.value.errors] == ["/listen"]


def test_capture_names_only_local_displays_and_v4l2_devices() -> None:
    assert params.validate("video::capture", {"display": ":3.0"}) == {"display": ":3.0"}
    for field, value in (("display", "remote.example:0"), ("device", "/etc/passwd"), ("source", "dshow")):
        with pytest.raises(RemoteProtocolError) as refused:
            params.validate("video::capture", {field: value})
        assert [e.path for e in refused.value.errors] == [f"/{field}"]


@pytest.mark.parametrize(
    ("url", "allowed_by"),
    [
        ("rtmp://203.0.113.5/live/key", "rtmp://203.0.113.5:1935"),
        ("https://cdn.example.com/live/index.m3u8", "https://cdn.example.com"),
        ("http://10.1.2.3:8080/stream.ts", "*://10.0.0.0/8:*"),
        ("rtsp://camera.studio.lan/main", "rtsp://camera.studio.lan:554"),  # rtsp's default port
        ("rtsps://[2001:db8::7]/main", "rtsps://[2001:db8::]/32:322"),
        ("tcp://198.51.100.9:9000", "tcp://198.51.100.9:9000"),
    ],
)
def test_a_pull_reaches_only_sources_the_operator_lists(url: str, allowed_by: str) -> None:
    from compositord.protocol.destinations import StreamDestinations
    from compositord.protocol.params import ONE_SHOT, ValidationContext

    with pytest.raises(RemoteProtocolError) as refused:
        params.validate("av::stream_in", {"url": url})  # the daemon's default: loopback only
    (error,) = refused.value.errors
    assert error.path == "/url"
    assert "is not an allowed source to pull from" in error.message and "allowed_ingest_sources" in error.message
    operator = ValidationContext(ingest_sources=StreamDestinations.parse([allowed_by]))
    assert params.validate("av::stream_in", {"url": url}, context=operator)["url"] == url
    params.validate("av::stream_in", {"url": url}, context=ONE_SHOT)  # a local user's own command reaches anything
    # Listing where inputs may listen never opens pulls, and the reverse.
    listen_only = ValidationContext(ingest_listen=StreamDestinations.parse([allowed_by]))
    with pytest.raises(RemoteProtocolError):
        params.validate("av::stream_in", {"url": url}, context=listen_only)


@pytest.mark.parametrize(
    "url",
    [
        "http://2130706433/stream.ts",  # 127.0.0.1 as one decimal number: FFmpeg and this parser could disagree
        "http://user@127.0.0.1/stream.ts",  # user info before the host
        "https://127.0.0.1./live.m3u8",  # a trailing dot
        "ftp://127.0.0.1/clip.ts",
    ],
)
def test_a_pull_url_written_oddly_is_refused_even_from_loopback(url: str) -> None:
    with pytest.raises(RemoteProtocolError) as refused:
        params.validate("av::stream_in", {"url": url})
    assert [e.path for e in refused.value.errors] == ["/url"]


def test_loopback_pulls_are_allowed_by_default() -> None:
    for url in ("rtmp://127.0.0.1/live/key", "http://localhost:8080/live.m3u8", "rtsp://[::1]:8554/cam"):
        assert params.validate("av::stream_in", {"url": url})["url"] == url
