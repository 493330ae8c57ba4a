"""protocol/budget.py: the cost of a pipeline before anything is allocated, and the budget checks.

The two attacks of the hardening issue (#14): a createsession of under 1 KB with 7680x7680
canvases (2.1 GB in the daemon) and a 1.4 KB tune with twelve 8192x8192 text overlays
(4.3 GB) are refused with resource_limit, naming the field; the demo pipeline and every
example pipeline pass with room."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from compositord.daemon.config import LIMITS_ENVIRONMENT, Limits, SettingsError, demo_pipeline, load_pipeline, parse_size
from compositord.protocol import budget, envelope, params
from compositord.protocol.errors import ErrorCode, RemoteProtocolError

EXAMPLES = sorted(Path(__file__).resolve().parent.parent.joinpath("examples").glob("*.y*ml")) + sorted(
    Path(__file__).resolve().parent.parent.joinpath("examples").glob("*.toml")
)
LIMITS = Limits().budget()
COMP = "video::compositor"


def refused(pipeline: Mapping[str, Any], **kwargs: Any) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        budget.check_session(pipeline, limits=kwargs.pop("limits", LIMITS), **kwargs)
    assert info.value.code is ErrorCode.RESOURCE_LIMIT
    assert info.value.message.startswith(f"{info.value.path or '/'}: ")
    return info.value


def bars_into(
    width: int, height: int, *, comp: dict[str, Any] | None = None, sinks: dict[str, Any] | None = None
) -> dict[str, Any]:
    nodes = {
        "bars": {"kind": "video::colorbars", "params": {"width": width, "height": height}},
        "comp": {"kind": COMP, "params": {"width": width, "height": height, "num_inputs": 1, **(comp or {})}},
    }
    connections = [{"from_node": "bars", "from_pin": "out", "to_node": "comp", "to_pin": "in_0"}]
    for node_id, (kind, sink_params) in (sinks or {}).items():
        nodes[node_id] = {"kind": kind, "params": sink_params}
        connections.append({"from_node": "comp", "from_pin": "out", "to_node": node_id, "to_pin": "in"})
    return params.validate_pipeline({"nodes": nodes, "connections": connections})


# --- the attacks ------------------------------------------------------------------------------


def test_a_small_createsession_with_7680_canvases_is_refused() -> None:
    nodes: dict[str, Any] = {}
    connections = []
    for index in range(3):
        nodes[f"c{index}"] = {"kind": COMP, "params": {"width": 7680, "height": 7680, "num_inputs": 1, "fps": 1}}
        nodes[f"b{index}"] = {"kind": "video::colorbars", "params": {"width": 7680, "height": 7680, "animated": True}}
        connections.append({"from_node": f"b{index}", "from_pin": "out", "to_node": f"c{index}", "to_pin": "in_0"})
    text = envelope.serialize(
        envelope.Request("createsession", {"name": "big", "pipeline": {"nodes": nodes, "connections": connections}})
    )
    assert len(text) < 1000
    request = envelope.parse_message(text)
    assert isinstance(request, envelope.Request)
    action = envelope.parse_action(request)  # valid: only the budget stops it
    assert isinstance(action, envelope.CreateSession)
    error = refused(action.pipeline, base="/payload/pipeline")
    assert error.path is not None and error.path.startswith("/payload/pipeline/nodes/")
    assert "max_session_bytes" in error.message
    assert budget.session_cost(action.pipeline).bytes > 2 * LIMITS.max_session_bytes


def test_a_tune_with_twelve_8192_text_overlays_is_refused_at_the_overlay() -> None:
    before = bars_into(1280, 720)
    overlays = [
        {"id": f"t{index}", "text": f"attack {index}", "rect": {"x": 0, "y": 0, "width": 8192, "height": 8192}}
        for index in range(12)
    ]
    patch = {"text_overlays": overlays}
    tune = envelope.TuneNode("s", "comp", envelope.PATCH, patch).to_request()
    assert len(envelope.serialize(tune)) < 1500
    after = {
        **before,
        "nodes": {
            **before["nodes"],
            "comp": {"kind": COMP, "params": params.validate(COMP, {**before["nodes"]["comp"]["params"], **patch})},
        },
    }
    error = refused(after, previous=budget.session_cost(before), params_paths={"comp": "/payload/message/PatchParams"})
    assert error.path is not None and error.path.startswith("/payload/message/PatchParams/text_overlays/")
    assert error.path.endswith("/rect")
    assert "8192x8192 raster" in error.message


# --- what passes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pipeline", [demo_pipeline(), *(load_pipeline(file) for file in EXAMPLES)], ids=["demo", *(f.name for f in EXAMPLES)]
)
def test_the_demo_and_the_examples_pass_with_room(pipeline: dict[str, Any]) -> None:
    cost = budget.check_session(pipeline, limits=LIMITS)
    assert cost.bytes < LIMITS.max_session_bytes / 4
    assert cost.pixels_per_second < LIMITS.max_total_pixels_per_second / 4
    # Room for several of them side by side.
    budget.check_session(
        pipeline, limits=LIMITS, other_sessions_bytes=3 * cost.bytes, other_sessions_pixels_per_second=3 * cost.pixels_per_second
    )


def test_the_examples_are_found() -> None:
    assert {file.name for file in EXAMPLES} >= {"example-pipeline.yaml", "example-io-pipeline.yaml", "example-pipeline.toml"}


# --- the refusal says what would fit ----------------------------------------------------------


def test_a_canvas_too_large_is_named_with_a_size_that_fits() -> None:
    small = Limits(max_session_bytes=256 << 20).budget()
    before = bars_into(640, 360, comp={"fps": 1})
    after = bars_into(640, 360, comp={"width": 6000, "height": 6000, "fps": 1})
    error = refused(after, limits=small, previous=budget.session_cost(before))
    assert error.path == "/nodes/comp/params/width"
    fits = error.message.rsplit("; ", 1)[1]
    width, height = (int(side) for side in fits.removesuffix(" would fit").split("x"))
    width, height = width - width % 2, height - height % 2
    assert budget.check_session(bars_into(640, 360, comp={"width": width, "height": height, "fps": 1}), limits=small)
    assert 1000 < width == height < 6000


def test_the_daemons_total_and_the_session_count() -> None:
    pipeline = bars_into(1280, 720)
    cost = budget.session_cost(pipeline)
    error = refused(pipeline, other_sessions_bytes=LIMITS.max_total_bytes - cost.bytes + 1)
    assert "max_total_bytes" in error.message
    budget.check_session(pipeline, limits=LIMITS, other_sessions_bytes=LIMITS.max_total_bytes - cost.bytes)
    budget.check_session_count(LIMITS.max_sessions - 1, limits=LIMITS)
    with pytest.raises(RemoteProtocolError) as info:
        budget.check_session_count(LIMITS.max_sessions, limits=LIMITS, path="/payload")
    assert (info.value.code, info.value.path) == (ErrorCode.RESOURCE_LIMIT, "/payload")
    assert "max_sessions" in info.value.message


def test_the_pixel_rate_names_the_fps_and_a_rate_that_fits() -> None:
    pipeline = bars_into(1920, 1080, comp={"fps": 60})
    other = LIMITS.max_total_pixels_per_second - 1920 * 1080 * 30
    error = refused(pipeline, other_sessions_pixels_per_second=other, base="/payload/pipeline")
    assert error.path == "/payload/pipeline/nodes/comp/params/fps"
    assert "at most 30 fps at 1920x1080 fits" in error.message
    budget.check_session(bars_into(1920, 1080, comp={"fps": 30}), limits=LIMITS, other_sessions_pixels_per_second=other)


# --- the model ----------------------------------------------------------------------------------


def test_sinks_add_their_queues_and_encoders_to_the_canvas() -> None:
    plain = budget.session_cost(bars_into(1280, 720)).by_pointer["/nodes/comp/params/width"]
    y4m = budget.session_cost(bars_into(1280, 720, sinks={"raw": ("sink::y4m", {"path": "a.y4m"})})).by_pointer
    both = budget.session_cost(
        bars_into(1280, 720, sinks={"raw": ("sink::y4m", {"path": "a.y4m"}), "rec": ("sink::file", {"path": "a.mp4"})})
    ).by_pointer
    assert plain < y4m["/nodes/comp/params/width"] < both["/nodes/comp/params/width"]
    frame = 1280 * 720 * budget.RGBA
    assert y4m["/nodes/comp/params/width"] - plain == pytest.approx(budget.SINK_QUEUE_FRAMES["sink::y4m"] * frame, abs=1)


def test_identical_text_rasters_and_images_are_counted_once() -> None:
    overlay = {"id": "a", "text": "same", "rect": {"x": 0, "y": 0, "width": 400, "height": 100}}
    one = budget.session_cost(bars_into(640, 360, comp={"text_overlays": [overlay]})).bytes
    two = budget.session_cost(bars_into(640, 360, comp={"text_overlays": [overlay, {**overlay, "id": "b"}]})).bytes
    other = budget.session_cost(
        bars_into(640, 360, comp={"text_overlays": [overlay, {**overlay, "id": "b", "text": "other"}]})
    ).bytes
    assert one == two < other
    logo = {"id": "l", "asset_path": "logo.png"}
    images = bars_into(640, 360, comp={"image_overlays": [logo, {**logo, "id": "m"}]})
    assert budget.session_cost(images).bytes == budget.session_cost(bars_into(640, 360, comp={"image_overlays": [logo]})).bytes
    known = budget.session_cost(images, media_sizes={"logo.png": (10, 10)}).bytes
    assert known < budget.session_cost(images).bytes  # the assumed 1920x1080 is more than a 10x10 logo


def test_text_without_a_rect_size_is_estimated_from_text_and_font_size() -> None:
    def cost(text: str, size: float) -> int:
        overlay = {"id": "t", "text": text, "font_size": size, "rect": {"x": 0, "y": 0}}
        return budget.session_cost(bars_into(64, 36, comp={"text_overlays": [overlay]})).by_pointer[
            "/nodes/comp/params/text_overlays/0/font_size"
        ]

    assert cost("ab", 32) < cost("abcd", 32) < cost("abcd", 64) < cost("abcd\nabcd", 64)
    long_line = cost("W" * 1000, 512)
    assert long_line == cost("W" * 999, 512), "clipped at MAX_TEXT_RASTER_SIDE like the renderer"


@given(
    st.integers(16, 7680),
    st.integers(16, 7680),
    st.integers(0, 512),
    st.sampled_from(["rgba8", "nv12", "i420"]),
)
def test_the_cost_grows_with_the_canvas(width: int, height: int, grow: int, output_format: str) -> None:
    width, height = width - width % 2, height - height % 2
    bigger_w, bigger_h = min(7680, width + 2 * grow), min(7680, height + 2 * grow)
    small = budget.session_cost(bars_into(width, height, comp={"output_format": output_format}))
    large = budget.session_cost(bars_into(bigger_w, bigger_h, comp={"output_format": output_format}))
    assert small.bytes <= large.bytes
    assert small.pixels_per_second <= large.pixels_per_second


def test_the_model_matches_the_engine() -> None:
    from compositord.daemon.engine.render import text
    from compositord.daemon.engine.sinks import file, preview, stream, window, y4m
    from compositord.daemon.engine.sources import pacing, stream_in

    assert text.MAX_TEXT_RASTER_SIDE == budget.MAX_TEXT_RASTER_SIDE
    # A live input's paced queue, plus the decoder's frame and the one shown.
    assert budget.CAPTURE_FRAMES == pacing.DEFAULT_CAPACITY + 2
    assert budget.STREAM_IN_FRAMES == stream_in.PACER_CAPACITY + 2
    engine = {
        "sink::file": file.FileSink.queue_capacity,
        "sink::y4m": y4m.Y4MSink.queue_capacity,
        "sink::stream": stream.StreamOutput.queue_capacity,  # the node in the engine (its encoder is a helper process)
        "sink::window": window.WindowSink.queue_capacity,
        "sink::preview": preview.PreviewSink.queue_capacity,
    }
    assert engine == dict(budget.SINK_QUEUE_FRAMES)
    assert set(budget.SINK_QUEUE_FRAMES) == {kind for kind in params.NODE_KINDS if params.role(kind) == params.SINK}


# --- settings -----------------------------------------------------------------------------------


def test_budgets_come_from_the_environment() -> None:
    limits = Limits.from_environ(
        {
            "COMPOSITORD_MAX_SESSION_BYTES": "512M",
            "COMPOSITORD_MAX_TOTAL_BYTES": "3GiB",
            "COMPOSITORD_MAX_SESSIONS": "4",
            "COMPOSITORD_MAX_TOTAL_PIXELS_PER_SECOND": "100000000",
            "COMPOSITORD_MIN_FREE_DISK_BYTES": "0",
        }
    )
    assert limits.budget() == budget.BudgetLimits(512 << 20, 3 << 30, 4, 100_000_000)
    assert limits.min_free_disk_bytes == 0
    assert Limits.from_environ({}) == Limits()
    assert set(LIMITS_ENVIRONMENT.values()) <= {f.name for f in dataclasses.fields(Limits)}


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("COMPOSITORD_MAX_SESSION_BYTES", "lots"),
        ("COMPOSITORD_MAX_SESSION_BYTES", "0"),
        ("COMPOSITORD_MAX_SESSIONS", "1.5"),
        ("COMPOSITORD_MAX_TOTAL_PIXELS_PER_SECOND", "-3"),
        ("COMPOSITORD_MIN_FREE_DISK_BYTES", "12Q"),
    ],
)
def test_bad_budgets_are_refused_naming_the_setting(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as info:
        Limits.from_environ({variable: value})
    assert LIMITS_ENVIRONMENT[variable] in str(info.value) or variable in str(info.value)


def test_sizes() -> None:
    assert [parse_size(text, setting="x") for text in ("1024", "1K", "2 M", "3GiB", "1tb")] == [
        1024,
        1024,
        2 << 20,
        3 << 30,
        1 << 40,
    ]


def test_every_source_kind_has_a_cost_model() -> None:
    # A source kind without one made every addnode of that kind an internal error.
    from compositord.protocol.budget import SOURCE_MODELS
    from compositord.protocol.params import AUDIO_KIND_PREFIX, KINDS, SOURCE

    sound_only = {kind for kind in KINDS if kind.startswith(AUDIO_KIND_PREFIX)}  # a fixed cost, no picture model
    assert sound_only and not set(SOURCE_MODELS) & sound_only
    assert {kind for kind, node in KINDS.items() if node.role == SOURCE} == {*SOURCE_MODELS, *sound_only}


@pytest.mark.parametrize(
    ("kind", "params", "field"),
    [
        ("video::capture", {"source": "x11", "width": 7680, "height": 4320}, "width"),
        ("av::stream_in", {"url": "udp://127.0.0.1:5000"}, "url"),
    ],
)
def test_live_inputs_count_their_paced_frames(kind: str, params: dict[str, Any], field: str) -> None:
    from compositord.protocol.budget import ASSUMED_MEDIA_SIZE, CAPTURE_FRAMES, STREAM_IN_FRAMES, session_cost

    frames = CAPTURE_FRAMES if kind == "video::capture" else STREAM_IN_FRAMES
    pipeline = {"nodes": {"live": {"kind": kind, "params": params}}, "connections": []}
    (item,) = session_cost(pipeline).items
    width, height = (params["width"], params["height"]) if "width" in params else ASSUMED_MEDIA_SIZE
    assert item.pointer == f"/nodes/live/params/{field}"
    assert item.bytes == pytest.approx(width * height * frames * 1.5)
    # A stream whose size the engine reported is counted at that size.
    if kind == "av::stream_in":
        (known,) = session_cost(pipeline, media_sizes={"live": (640, 360)}).items
        assert known.bytes == pytest.approx(640 * 360 * frames * 1.5)


def test_scenes_count_their_transition_canvases_and_a_preview_its_own_targets() -> None:
    from compositord.protocol.budget import READBACK_FRAMES, TRANSITION_CANVASES, session_cost

    def cost(extra: dict[str, Any]) -> dict[str, int]:
        comp = {"width": 1280, "height": 720, "num_inputs": 1, "output_format": "nv12", **extra}
        pipeline = {"nodes": {"comp": {"kind": "video::compositor", "params": comp}}, "connections": []}
        return {item.pointer: item.bytes for item in session_cost(pipeline).items}

    plain = cost({})
    scenes = {"scenes": {"a": {"layers": {}}, "b": {"layers": {}}}, "program_scene": "a"}
    with_scenes = cost(scenes)
    with_preview = cost({**scenes, "preview_scene": "b"})
    pixels = 1280 * 720
    assert set(with_scenes) - set(plain) == {"/nodes/comp/params/scenes"}
    assert with_scenes["/nodes/comp/params/scenes"] == TRANSITION_CANVASES * 4 * pixels
    # The preview pin: an RGBA target, the driver's share, NV12 planes and the read-back frames.
    assert with_preview["/nodes/comp/params/preview_scene"] == pytest.approx(
        (4 + 4 + 1.5 + READBACK_FRAMES * 1.5) * pixels, abs=1
    )


def test_the_overlays_of_every_scene_count() -> None:
    # Scenes hold their own overlays (the top-level lists must then be empty): a budget that read only the top
    # level let 32 scenes of 8192x8192 text rasters through.
    from compositord.protocol.budget import session_cost

    big_text = {"id": "t", "text": "x", "rect": {"x": 0, "y": 0, "width": 8192, "height": 8192}}
    scenes = {f"s{index}": {"text_overlays": [{**big_text, "text": f"scene {index}"}]} for index in range(3)}
    comp = {"width": 640, "height": 360, "num_inputs": 1, "scenes": scenes, "program_scene": "s0"}
    pipeline = {"nodes": {"comp": {"kind": "video::compositor", "params": comp}}, "connections": []}
    texts = [item for item in session_cost(pipeline).items if "text overlay" in item.what]
    assert [item.pointer for item in texts] == [f"/nodes/comp/params/scenes/s{index}/text_overlays/0/rect" for index in range(3)]
    assert all(item.bytes == 8192 * 8192 * 8 for item in texts)
    error = refused(pipeline)
    assert error.code == ErrorCode.RESOURCE_LIMIT
    assert (error.path or "").startswith("/nodes/comp/params/scenes/s") and "text overlay" in error.message


# Every field declared cost-neutral, with values it may take: changing it must leave the cost as it was (the
# daemon then skips the check for a tune of only these, tests of that below). A field added to
# COST_NEUTRAL_FIELDS without a case here fails test_every_neutral_field_has_a_case.
_NEUTRAL_CASES: dict[str, list[Any]] = {
    "layers": [
        {},
        {"in_0": {"rect": {"x": 10, "y": 20, "width": 64, "height": 48}, "opacity": 0.25, "rotation_degrees": 30}},
        {"in_0": {"visible": False}, "in_1": {"rect": {"x": 0, "y": 0, "width": 8192, "height": 8192}, "z_index": 5}},
    ],
    "background": ["#FF0000FF", "#00000000"],
    "color_matrix": ["bt601"],
    "program_scene": ["b"],
    "transition": [{"kind": "fade", "duration_ms": 2000, "easing": "ease_in_out"}, {"kind": "wipe", "direction": "up"}],
    "transition_position": [0.0, 0.5, 1.0],
}


def _neutral_base(field: str) -> dict[str, Any]:
    """A compositor with two inputs, overlays and a sink; with scenes where ``field`` needs them."""
    text = {"id": "t", "text": "hello", "rect": {"x": 0, "y": 0}}
    comp: dict[str, Any] = {"width": 1280, "height": 720, "num_inputs": 2, "output_format": "nv12"}
    if field in {"program_scene", "transition", "transition_position"}:
        comp["scenes"] = {"a": {"layers": {"in_0": {}}, "text_overlays": [text]}, "b": {"layers": {"in_1": {}}}}
        comp["program_scene"] = "a"
        if field == "transition_position":
            comp["preview_scene"] = "b"
    else:
        comp["text_overlays"] = [text]
    nodes = {
        "bars": {"kind": "video::colorbars", "params": {"width": 640, "height": 360}},
        "push": {"kind": "video::push", "params": {"width": 320, "height": 240, "pixel_format": "nv12"}},
        "comp": {"kind": COMP, "params": comp},
        "rec": {"kind": "sink::file", "params": {"path": "out.mp4"}},
    }
    connections = [
        {"from_node": "bars", "from_pin": "out", "to_node": "comp", "to_pin": "in_0"},
        {"from_node": "push", "from_pin": "out", "to_node": "comp", "to_pin": "in_1"},
        {"from_node": "comp", "from_pin": "out", "to_node": "rec", "to_pin": "in"},
    ]
    return params.validate_pipeline({"nodes": nodes, "connections": connections})


def test_every_neutral_field_has_a_case() -> None:
    assert set(budget.COST_NEUTRAL_FIELDS) == {COMP}
    assert set(_NEUTRAL_CASES) == set(budget.COST_NEUTRAL_FIELDS[COMP])
    assert set(_NEUTRAL_CASES) <= set(params.defaults(COMP))  # each is a field of the compositor


@pytest.mark.parametrize("field", sorted(_NEUTRAL_CASES))
def test_a_neutral_field_leaves_the_cost_as_it_was(field: str) -> None:
    base = _neutral_base(field)
    before = budget.session_cost(base)
    assert budget.cost_unchanged_by(COMP, [field])
    for value in _NEUTRAL_CASES[field]:
        changed = {**base, "nodes": {**base["nodes"]}}
        comp = changed["nodes"]["comp"]
        changed["nodes"]["comp"] = {**comp, "params": params.validate(COMP, {**comp["params"], field: value})}
        assert budget.session_cost(changed) == before, f"{field} = {value!r} changed the cost"


@pytest.mark.parametrize("fields", [["width"], ["layers", "text_overlays"], ["scenes"], ["audio"], ["num_inputs"]])
def test_other_fields_are_costed_again(fields: list[str]) -> None:
    assert not budget.cost_unchanged_by(COMP, fields)
    assert not budget.cost_unchanged_by("video::colorbars", ["animated"])  # sources: always costed
