"""protocol/schema.py: the JSON Schema of every node kind says what params.validate accepts.

Each schema is checked as a schema (the metaschema of its dialect), then
params are given to both the validator and the schema: what the validator
accepts the schema accepts, and the refusals JSON Schema can express (types,
ranges, patterns, unknown keys, required keys) the schema refuses too.
"""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from compositord.protocol import params, schema
from compositord.protocol.errors import RemoteProtocolError

SCHEMAS = schema.node_kind_schemas()


def _accepts(kind: str, value: Any) -> bool:
    return jsonschema.Draft202012Validator(SCHEMAS[kind]).is_valid(value)


def test_every_kind_has_a_valid_schema() -> None:
    assert list(SCHEMAS) == list(params.NODE_KINDS)
    for kind, kind_schema in SCHEMAS.items():
        jsonschema.Draft202012Validator.check_schema(kind_schema)
        assert kind_schema["title"] == kind and kind_schema["type"] == "object"


# A value for each required field of any kind.
REQUIRED_VALUES = {"path": "a.mp4", "url": "udp://127.0.0.1:5000", "asset_path": "a.png"}


@pytest.mark.parametrize("kind", params.NODE_KINDS)
def test_the_smallest_params_are_accepted_by_both_and_less_by_neither(kind: str) -> None:
    required = [key for key, spec in params.KINDS[kind].schema.fields.items() if spec.default is params.REQUIRED]
    given = {key: REQUIRED_VALUES[key] for key in required}
    params.validate(kind, given)
    assert _accepts(kind, given)
    for key in required:
        assert not _accepts(kind, {k: v for k, v in given.items() if k != key})


ACCEPTED = [
    {"width": 640, "height": 360, "fps": 25, "background": "#112233"},
    {"layers": {"in_1": {"rect": {"x": -10, "y": 5.4, "width": 100, "height": 50}, "opacity": 0.5, "crop_shape": "circle"}}},
    {"layers": {"in_0": {"rect": None, "z_index": None}}},
    {
        "text_overlays": [{"id": "t", "text": "hi", "color": "#FFFFFF80", "rect": {"x": 1}, "mirror_vertical": True}],
        "image_overlays": [{"id": "i", "asset_path": "logos/a.png", "rect": {"width": None}}],
    },
]

REFUSED = [
    {"width": 0},
    {"width": 12.5},
    {"fps": "30"},
    {"background": "red"},
    {"output_format": "yuv"},
    {"unknown": 1},
    {"layers": {"in_x": {}}},
    {"layers": {"in_0": {"rect": {"x": 0, "y": 0, "width": 10}}}},  # height required in a layer rect
    {"text_overlays": [{"text": "no id"}]},
    {"image_overlays": [{"id": "i", "asset_path": "/etc/passwd"}]},
    {"image_overlays": [{"id": "i", "asset_path": "../up.png"}]},
    {"image_overlays": [{"id": "i", "asset_path": "a/../../up.png"}]},
    {"image_overlays": [{"id": "i", "asset_path": "C:x.png"}]},
    {"image_overlays": [{"id": "i", "asset_path": "a\\b.png"}]},
    {"text_overlays": [{"id": "t"}] * 33},
]


@pytest.mark.parametrize("value", ACCEPTED)
def test_compositor_params_the_validator_accepts_the_schema_accepts(value: dict[str, Any]) -> None:
    params.validate(params.COMPOSITOR_KIND, value)
    assert _accepts(params.COMPOSITOR_KIND, value)


@pytest.mark.parametrize("value", REFUSED)
def test_compositor_params_the_validator_refuses_the_schema_refuses(value: dict[str, Any]) -> None:
    with pytest.raises(RemoteProtocolError):
        params.validate(params.COMPOSITOR_KIND, value)
    assert not _accepts(params.COMPOSITOR_KIND, value)


def test_docs_defaults_and_auto_fields_are_described() -> None:
    layer = SCHEMAS[params.COMPOSITOR_KIND]["properties"]["layers"]["patternProperties"]
    layer_schema = next(iter(layer.values()))
    assert layer_schema["properties"]["opacity"]["default"] == 1.0
    assert layer_schema["properties"]["z_index"]["type"] == ["integer", "null"]  # auto: the slot number
    assert "slot" in layer_schema["properties"]["z_index"]["description"]
    assert "num_inputs" not in SCHEMAS[params.COMPOSITOR_KIND].get("required", [])


def test_a_spec_without_a_json_schema_is_our_own_bug() -> None:
    class Unknown(params.Spec):
        pass

    with pytest.raises(TypeError, match="Unknown"):
        schema._spec_schema(Unknown())
