"""The params schema of every node kind as JSON Schema (draft 2020-12), made from :mod:`params`' field specs.

For clients that build forms or check params on their side (StreamKit's UI
reads ``param_schema`` from ``GET /api/v1/schema/nodes``). The specs in
:mod:`compositord.protocol.params` stay the one source of truth: what they
accept and what this schema describes are kept equal by
``tests/test_schema.py``, which validates accepted and refused params against
both.

What JSON Schema cannot say is left to the server: pixel values are rounded,
colours normalized, and the cross-field checks of a kind (a layer's pin below
``num_inputs``, even sizes for NV12 ...) are named in its ``description``
notes only.
"""

from __future__ import annotations

from typing import Any

from compositord.protocol import params as node_params

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def node_kind_schemas() -> dict[str, dict[str, Any]]:
    """``{kind: JSON Schema of its params}``, in the order of :data:`params.NODE_KINDS`."""
    return {name: _kind_schema(node_params.KINDS[name]) for name in node_params.NODE_KINDS}


def _kind_schema(kind: node_params.NodeKind) -> dict[str, Any]:
    schema = _spec_schema(kind.schema)
    description = kind.summary[0].upper() + kind.summary[1:] + "."
    if kind.notes:
        description += " " + " ".join(kind.notes)
    return {"$schema": JSON_SCHEMA_DIALECT, "title": kind.name, "description": description, **schema}


def _with_common(spec: node_params.Spec, schema: dict[str, Any]) -> dict[str, Any]:
    if spec.doc:
        schema["description"] = spec.doc
    if spec.default is node_params.AUTO:
        # "auto": absent or null, and then computed by the server.
        kind = schema.get("type")
        if isinstance(kind, str):
            schema["type"] = [kind, "null"]
    elif spec.default is not node_params.REQUIRED:
        schema["default"] = spec.default
    return schema


def _spec_schema(spec: node_params.Spec) -> dict[str, Any]:
    if isinstance(spec, node_params.Bool):
        return _with_common(spec, {"type": "boolean"})
    if isinstance(spec, node_params.Int):
        return _with_common(spec, {"type": "integer", "minimum": spec.min, "maximum": spec.max})
    if isinstance(spec, (node_params.Number, node_params.Pixels)):
        return _with_common(spec, {"type": "number", "minimum": spec.min, "maximum": spec.max})
    if isinstance(spec, node_params.Enum):
        return _with_common(spec, {"type": "string", "enum": list(spec.choices)})
    if isinstance(spec, node_params.Color):
        return _with_common(spec, {"type": "string", "pattern": "^#([0-9A-Fa-f]{6})([0-9A-Fa-f]{2})?$"})
    if isinstance(spec, node_params.Str):
        schema: dict[str, Any] = {"type": "string", "maxLength": spec.max_len}
        if spec.min_len:
            schema["minLength"] = spec.min_len
        if spec.pattern is not None:
            schema["pattern"] = f"^(?:{spec.pattern})$"
        return _with_common(spec, schema)
    if isinstance(spec, node_params.RelativePath):
        # Absolute paths, drive letters, backslashes and ".." components are refused.
        relative = r"^(?!/)(?![A-Za-z]:)(?!.*\\)(?!(?:.*/)?\.\.(?:/|$)).+$"
        return _with_common(spec, {"type": "string", "minLength": 1, "maxLength": spec.max_len, "pattern": relative})
    if isinstance(spec, node_params.Object):
        properties = {key: _spec_schema(child) for key, child in spec.fields.items()}
        required = [key for key, child in spec.fields.items() if child.default is node_params.REQUIRED]
        schema = {"type": "object", "properties": properties, "additionalProperties": False}
        if required:
            schema["required"] = required
        return _with_common(spec, schema)
    if isinstance(spec, node_params.MapOf):
        return _with_common(
            spec,
            {
                "type": "object",
                "patternProperties": {f"^(?:{spec.key_pattern})$": _spec_schema(spec.value)},
                "additionalProperties": False,
            },
        )
    if isinstance(spec, node_params.ListOf):
        return _with_common(spec, {"type": "array", "items": _spec_schema(spec.item), "maxItems": spec.max_items})
    raise TypeError(f"no JSON Schema for {type(spec).__name__}")
