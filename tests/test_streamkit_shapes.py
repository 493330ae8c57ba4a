"""protocol/streamkit.py and the envelope's StreamKit shapes (issue #16), without a daemon.

The StreamKit shapes here are written from StreamKit's public UI source
(``ui/src``: the compositor's layer parsers and serializers, the generated API
and compositor types), not copied from it.
"""

from __future__ import annotations

import base64
import hashlib
import io
from typing import Any

import pytest
from PIL import Image

from compositord.protocol import envelope as E
from compositord.protocol import params, streamkit
from compositord.protocol.causal import Stamp
from compositord.protocol.errors import ErrorCode, RemoteProtocolError

COMP = params.COMPOSITOR_KIND


def png_bytes(width: int = 4, height: int = 3) -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", (width, height), (255, 0, 0, 128)).save(out, format="PNG")
    return out.getvalue()


PNG = png_bytes()
PNG_B64 = base64.b64encode(PNG).decode()
PNG_PATH = f"inline/{hashlib.sha256(PNG).hexdigest()}.png"

# A compositor config as StreamKit's UI serializes it (buildConfig): overlays with colour arrays,
# font_name, mirrors, and an uploaded image inline without an id.
STREAMKIT_CONFIG: dict[str, Any] = {
    "width": 640,
    "height": 360,
    "fps": 30,
    "layers": {
        "in_0": {
            "rect": {"x": 0, "y": 0, "width": 640, "height": 360},
            "opacity": 1,
            "rotation_degrees": 0,
            "z_index": 0,
            "mirror_horizontal": False,
            "mirror_vertical": False,
            "crop_zoom": 1,
            "crop_x": 0.5,
            "crop_y": 0.5,
            "crop_shape": "rect",
        }
    },
    "text_overlays": [
        {
            "text": "Live",
            "rect": {"x": 40, "y": 40, "width": 300, "height": 60},
            "color": [255, 200, 0, 255],
            "font_size": 24,
            "font_name": "dejavu-sans",
            "opacity": 1,
            "rotation_degrees": 0,
            "z_index": 100,
            "mirror_horizontal": True,
            "mirror_vertical": False,
        }
    ],
    "image_overlays": [
        {
            "data_base64": PNG_B64,
            "rect": {"x": 500, "y": 20, "width": 100, "height": 75},
            "opacity": 0.8,
            "rotation_degrees": 0,
            "z_index": 200,
            "mirror_horizontal": False,
            "mirror_vertical": True,
        }
    ],
}

# The same config as compositord's own clients spell it.
CANONICAL_CONFIG: dict[str, Any] = {
    **STREAMKIT_CONFIG,
    "text_overlays": [
        {
            **{k: v for k, v in STREAMKIT_CONFIG["text_overlays"][0].items() if k not in ("color", "font_name")},
            "id": "text_0",
            "color": "#FFC800FF",
            "font": "default",
        }
    ],
    "image_overlays": [
        {
            **{k: v for k, v in STREAMKIT_CONFIG["image_overlays"][0].items() if k != "data_base64"},
            "id": "img_0",
            "asset_path": PNG_PATH,
        }
    ],
}


def test_a_streamkit_config_and_the_canonical_one_validate_to_the_same_durable_params() -> None:
    canonical = streamkit.canonical_params(STREAMKIT_CONFIG)
    assert params.validate(COMP, canonical.params) == params.validate(COMP, CANONICAL_CONFIG)
    assert canonical.images == (streamkit.InlineImage(PNG_PATH, PNG),)
    assert streamkit.canonical_params(CANONICAL_CONFIG).params == CANONICAL_CONFIG, "canonical params are left as they are"
    assert "data_base64" in STREAMKIT_CONFIG["image_overlays"][0], "the input is not changed"


def test_given_ids_and_a_matching_asset_path_are_kept() -> None:
    config = {
        "text_overlays": [{"id": "title", "text": "a"}],
        "image_overlays": [{"id": "logo", "data_base64": PNG_B64, "asset_path": PNG_PATH}],
    }
    canonical = streamkit.canonical_params(config).params
    assert canonical["text_overlays"][0]["id"] == "title"
    assert canonical["image_overlays"][0] == {"id": "logo", "asset_path": PNG_PATH}


@pytest.mark.parametrize(
    ("font_name", "font"),
    [("dejavu-sans", "default"), ("default", "default"), ("fonts/Inter.ttf", "fonts/Inter.ttf"), (None, None)],
)
def test_font_names_are_bundled_font_tokens_or_asset_files(font_name: str | None, font: str | None) -> None:
    overlay = streamkit.canonical_params({"text_overlays": [{"id": "t", "font_name": font_name}]}).params["text_overlays"][0]
    assert overlay.get("font") == font and "font_name" not in overlay


def test_colour_arrays_with_three_items_are_opaque() -> None:
    overlay = streamkit.canonical_params({"text_overlays": [{"color": [1, 2, 254.0]}]}).params["text_overlays"][0]
    assert overlay["color"] == "#0102FEFF"


def test_a_data_url_is_an_inline_image_too() -> None:
    config = {"image_overlays": [{"data_base64": "data:image/png;base64," + PNG_B64}]}
    assert streamkit.canonical_params(config).params["image_overlays"][0]["asset_path"] == PNG_PATH


@pytest.mark.parametrize(
    ("config", "path", "reason"),
    [
        ({"text_overlays": [{"color": [255, 0, 0, 256]}]}, "/p/text_overlays/0/color/3", "0..255"),
        ({"text_overlays": [{"color": [255, 0.5, 0, 1]}]}, "/p/text_overlays/0/color/1", "0..255"),
        ({"text_overlays": [{"color": [True, 0, 0]}]}, "/p/text_overlays/0/color/0", "0..255"),
        ({"text_overlays": [{"color": [1, 2]}]}, "/p/text_overlays/0/color", "3 or 4"),
        ({"text_overlays": [{"font_name": 3}]}, "/p/text_overlays/0/font_name", "font"),
        ({"text_overlays": [{"font_name": "dejavu-sans", "font": "x.ttf"}]}, "/p/text_overlays/0/font_name", "one of them"),
        ({"image_overlays": [{"data_base64": ""}]}, "/p/image_overlays/0/data_base64", "non-empty"),
        ({"image_overlays": [{"data_base64": "not base64!"}]}, "/p/image_overlays/0/data_base64", "base64"),
        ({"image_overlays": [{"data_base64": base64.b64encode(b"GIF00a").decode()}]}, "/p/image_overlays/0/data_base64", "PNG"),
        ({"image_overlays": [{"data_base64": PNG_B64, "asset_path": "a.png"}]}, "/p/image_overlays/0/data_base64", "one of"),
    ],
)
def test_malformed_alternative_spellings_are_refused_with_their_path(config: dict[str, Any], path: str, reason: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        streamkit.canonical_params(config, path="/p")
    assert info.value.code is ErrorCode.INVALID_PARAMS
    assert info.value.path == path and reason in info.value.message


def test_every_malformed_spelling_is_reported_at_once() -> None:
    config = {"text_overlays": [{"color": [300, 0, 0]}, {"color": [0, 0, -1]}], "image_overlays": [{"data_base64": "!"}]}
    with pytest.raises(RemoteProtocolError) as info:
        streamkit.canonical_params(config)
    assert [e.path for e in info.value.errors] == [
        "/text_overlays/0/color/0",
        "/text_overlays/1/color/2",
        "/image_overlays/0/data_base64",
    ]


def test_inline_images_have_a_size_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streamkit, "MAX_INLINE_IMAGE_BYTES", len(PNG) - 10)
    with pytest.raises(RemoteProtocolError, match="at most"):
        streamkit.canonical_params({"image_overlays": [{"data_base64": PNG_B64}]})


def test_the_same_image_twice_is_stored_once() -> None:
    canonical = streamkit.canonical_params(
        {"image_overlays": [{"id": "a", "data_base64": PNG_B64}, {"id": "b", "data_base64": PNG_B64}]}
    )
    assert [image.asset_path for image in canonical.images] == [PNG_PATH]


def test_streamkit_update_params_merge_objects_deeply_and_replace_the_rest() -> None:
    current: dict[str, Any] = {
        "width": 640,
        "layers": {"in_0": {"opacity": 0.5, "rect": {"x": 1, "y": 2, "width": 3, "height": 4}}},
        "text_overlays": [{"id": "a"}],
    }
    update: dict[str, Any] = {"layers": {"in_0": {"rect": {"x": 9}}, "in_1": {"opacity": 1}}, "text_overlays": [], "fps": None}
    merged = streamkit.merge_update(current, update)
    assert merged == {
        "width": 640,
        "layers": {"in_0": {"opacity": 0.5, "rect": {"x": 9, "y": 2, "width": 3, "height": 4}}, "in_1": {"opacity": 1}},
        "text_overlays": [],
        "fps": None,
    }
    assert current["layers"]["in_0"]["rect"]["x"] == 1, "pure"
    update["layers"]["in_1"]["opacity"] = 0
    assert merged["layers"]["in_1"]["opacity"] == 1, "the result shares nothing with the update"


def test_params_go_out_in_streamkit_spelling_and_come_back_the_same() -> None:
    durable = params.validate(COMP, streamkit.canonical_params(STREAMKIT_CONFIG).params)
    known: dict[str, str] = {PNG_PATH: PNG_B64}
    outgoing = streamkit.params_for_streamkit(durable, known.get)
    text, image = outgoing["text_overlays"][0], outgoing["image_overlays"][0]
    assert text["color"] == [255, 200, 0, 255] and text["font_name"] == "default" and "font" not in text
    assert image["data_base64"] == PNG_B64 and image["asset_path"] == PNG_PATH
    # What a StreamKit client sends back unchanged stores the same thing.
    assert params.validate(COMP, streamkit.canonical_params(outgoing).params) == durable
    unknown: dict[str, str] = {}
    assert "data_base64" not in streamkit.params_for_streamkit(durable, unknown.get)["image_overlays"][0]


def test_node_states_and_timestamps_in_streamkit_shapes() -> None:
    assert streamkit.node_state("ok") == "Running"
    assert streamkit.node_state({"error": "no file"}) == {"Failed": {"reason": "no file"}}
    assert streamkit.iso_timestamp(0.25) == "1970-01-01T00:00:00.250Z"
    state = streamkit.event_for_streamkit("nodestatechanged", {"node_id": "a", "state": {"error": "x"}}, now=1.0)
    assert state == {"node_id": "a", "state": {"Failed": {"reason": "x"}}, "timestamp": "1970-01-01T00:00:01.000Z"}
    view = streamkit.event_for_streamkit("nodeviewdataupdated", {"data": {"layers": []}, "timestamp": 2.5}, now=9.0)
    assert view["timestamp"] == "1970-01-01T00:00:02.500Z" and view["data"] == {"layers": []}
    stats = streamkit.event_for_streamkit(
        "nodestatsupdated", {"stats": {"frames_rendered": 30, "frames_dropped": 2}}, now=0.0, session_age_s=1.5
    )
    assert stats["stats"] == {
        "frames_rendered": 30,
        "frames_dropped": 2,
        "received": 30,
        "sent": 30,
        "discarded": 2,
        "errored": 0,
        "duration_secs": 1.5,
    }
    assert streamkit.event_for_streamkit("noderemoved", {"node_id": "a"}, now=0.0) == {"node_id": "a"}


def test_pipeline_object_session_info_node_definitions_and_packet_types() -> None:
    nodes = {"comp": {"kind": COMP, "params": {"text_overlays": [{"id": "t", "color": "#01020304"}]}, "state": "ok", "seq": 3}}
    connections = [{"from_node": "bars", "from_pin": "out", "to_node": "comp", "to_pin": "in_0"}]
    pipeline = streamkit.pipeline_object("demo", nodes, connections, {"comp": {"canvas_width": 8}})
    assert pipeline == {
        "name": "demo",
        "description": None,
        "mode": "dynamic",
        "nodes": {"comp": {"kind": COMP, "params": {"text_overlays": [{"id": "t", "color": [1, 2, 3, 4]}]}, "state": "Running"}},
        "connections": connections,
        "view_data": {"comp": {"canvas_width": 8}},
    }
    assert streamkit.session_info("s1", "demo", 0.0) == {"id": "s1", "name": "demo", "created_at": "1970-01-01T00:00:00.000Z"}
    definitions = {d["kind"]: d for d in streamkit.node_definitions()}
    assert list(definitions) == list(params.NODE_KINDS)
    assert definitions[COMP]["inputs"][0]["cardinality"] == {"Dynamic": {"prefix": "in"}}
    assert definitions["sink::file"]["outputs"] == [] and definitions["video::colorbars"]["inputs"] == []
    assert definitions[COMP]["param_schema"]["properties"]["width"]["default"] == 1280
    assert [t["id"] for t in streamkit.packet_types()] == ["RawVideo"]


# --------------------------------------------------------------------------- the envelope


def request(action: str, **payload: Any) -> E.Request:
    return E.Request(action, payload, "c1")


def test_tunenodesilent_is_tunenodeasync() -> None:
    message = {"UpdateParams": {"width": 320, "_sender": "me", "_rev": 4}}
    silent = E.parse_action(request("tunenodesilent", session_id="s", node_id="comp", message=message))
    assert silent == E.TuneNode("s", "comp", E.UPDATE, {"width": 320}, Stamp("me", 4), sync=False)
    assert (
        E.stamps_of(
            request("tunenodesilent", session_id="s", node_id="comp", message={"UpdateParams": {"_sender": "me", "_rev": "x"}})
        )
        == []
    )
    assert E.stamps_of(request("tunenodesilent", session_id="s", node_id="comp", message=message)) == [("comp", Stamp("me", 4))]


def test_a_tune_in_streamkit_spelling_is_canonical_once_parsed() -> None:
    message = {"UpdateParams": {**STREAMKIT_CONFIG, "_sender": "me", "_rev": 1}}
    tune = E.parse_action(request("tunenodeasync", session_id="s", node_id="comp", message=message))
    assert isinstance(tune, E.TuneNode)
    assert tune.params == streamkit.canonical_params(STREAMKIT_CONFIG).params
    assert tune.images == (streamkit.InlineImage(PNG_PATH, PNG),)
    bad = {"UpdateParams": {"text_overlays": [{"color": [1, 2, 3, 999]}]}}
    with pytest.raises(RemoteProtocolError) as info:
        E.parse_action(request("tunenode", session_id="s", node_id="comp", message=bad))
    assert info.value.path == "/payload/message/UpdateParams/text_overlays/0/color/3"


def test_createsession_without_a_pipeline_or_a_name_is_an_empty_session() -> None:
    assert E.parse_action(request("createsession", name=None)) == E.CreateSession(None, {"nodes": {}, "connections": []})
    assert E.parse_action(request("createsession")) == E.CreateSession(None, {"nodes": {}, "connections": []})
    created = E.parse_action(
        request("createsession", name="x", pipeline={"nodes": {"comp": {"kind": COMP, "params": STREAMKIT_CONFIG}}})
    )
    assert isinstance(created, E.CreateSession)
    assert created.pipeline["nodes"]["comp"]["params"] == params.validate(COMP, CANONICAL_CONFIG)
    assert created.images == (streamkit.InlineImage(PNG_PATH, PNG),)
    with pytest.raises(RemoteProtocolError) as info:
        E.parse_action(
            request("createsession", pipeline={"nodes": {"comp": {"kind": COMP, "params": {"text_overlays": [{"color": [1]}]}}}})
        )
    assert info.value.path == "/payload/pipeline/nodes/comp/params/text_overlays/0/color"


def test_addnode_with_params_null_and_in_streamkit_spelling() -> None:
    assert E.parse_action(request("addnode", session_id="s", node_id="p", kind="video::push", params=None)) == E.AddNode(
        "s", "p", "video::push", {}
    )
    added = E.parse_action(request("addnode", session_id="s", node_id="c", kind=COMP, params=STREAMKIT_CONFIG))
    assert isinstance(added, E.AddNode) and added.images == (streamkit.InlineImage(PNG_PATH, PNG),)
    assert added.params == params.validate(COMP, CANONICAL_CONFIG)


@pytest.mark.parametrize("mode", ["reliable", "best_effort"])
def test_connect_takes_streamkits_mode(mode: str) -> None:
    link = {"session_id": "s", "from_node": "a", "from_pin": "out", "to_node": "b", "to_pin": "in_0"}
    assert E.parse_action(request("connect", **link, mode=mode)) == E.Connect("s", "a", "out", "b", "in_0")
    with pytest.raises(RemoteProtocolError) as info:
        E.parse_action(request("connect", **link, mode="fast"))
    assert info.value.path == "/payload/mode"
    batch = E.parse_action(request("applybatch", session_id="s", operations=[{"action": "connect", **link, "mode": mode}]))
    assert isinstance(batch, E.ApplyBatch) and batch.operations == (E.Connect("s", "a", "out", "b", "in_0"),)


def test_additive_answers() -> None:
    created = E.session_created_response("c", "s", "demo", created_at=0.0)
    assert created.payload == {"session_id": "s", "name": "demo", "created_at": "1970-01-01T00:00:00.000Z"}
    assert E.session_created_event("s", "demo", 0.0).payload == created.payload
    pipeline = E.pipeline_response("c", session_id="s", nodes={}, connections=[], pipeline={"nodes": {}})
    assert pipeline.payload["pipeline"] == {"nodes": {}} and pipeline.payload["nodes"] == {}


def test_what_is_not_an_overlay_is_left_for_validation_to_judge() -> None:
    assert streamkit.canonical_params([1, 2]) == streamkit.Canonical([1, 2])
    odd = {"text_overlays": ["x", {"id": "t", "color": "#FFF"}], "image_overlays": [3], "layers": None}
    assert streamkit.canonical_params(odd).params == odd
    assert streamkit.params_for_streamkit(None) is None
    images = {"image_overlays": [7, {"id": "a"}, {"id": "b", "asset_path": "logo.png"}]}
    known: dict[str, str] = {"logo.png": "not inline: never sent as data_base64"}
    assert streamkit.params_for_streamkit({**odd, **images}, known.get) == {**odd, **images}


def test_nodeadded_params_and_every_other_event_in_streamkit_shapes() -> None:
    added = streamkit.event_for_streamkit(
        "nodeadded", {"node_id": "c", "params": {"text_overlays": [{"font": "default"}]}}, now=0.0
    )
    assert added["params"] == {"text_overlays": [{"font_name": "default"}]}
    view = streamkit.event_for_streamkit("nodeviewdataupdated", {"data": {}}, now=3.0)
    assert view["timestamp"] == "1970-01-01T00:00:03.000Z", "without a time of its own: now"
    stats = streamkit.event_for_streamkit("nodestatsupdated", {"stats": None}, now=0.0)
    assert stats["stats"]["duration_secs"] == 0.0 and stats["stats"]["sent"] == 0
