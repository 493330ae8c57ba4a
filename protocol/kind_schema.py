"""Every node kind's params as plain JSON: what the ``getschema`` action answers.

Made from the same declarations as validation and docs/PARAMS.md
(``protocol.params``), so a form built from it, the validator and the
reference cannot disagree. Each field is a JSON object:

- ``type``: ``integer``, ``number``, ``pixels`` (a number rounded to whole
  pixels), ``boolean``, ``enum``, ``color``, ``string``, ``path`` (relative,
  inside a directory the daemon chooses), ``object``, ``map``, ``list``, or
  ``other`` for a spec this module does not know (``description`` still says
  what it takes);
- ``description``: the type in words, as docs/PARAMS.md shows it;
- one of ``required: true``, ``auto: true`` (absent means computed) or
  ``default``;
- ``doc`` when the schema has one;
- per type: ``min`` / ``max`` (integer, number, pixels), ``choices`` (enum),
  ``min_length`` / ``max_length`` / ``pattern`` (string), ``max_length``
  (path), ``fields`` (object: name -> field, in declaration order), ``key_pattern``
  / ``key_doc`` / ``value`` (map), ``item`` / ``max_items`` / ``unique`` (list).

A kind is ``{"role", "summary", "notes", "fields", "input_pins", "output_pins"}``
where ``input_pins`` is a list of pin names, or for the compositor the string
``"num_inputs"``: its pins are ``in_0 .. in_{num_inputs-1}``.
"""

from __future__ import annotations

import copy
from typing import Any

from compositord.protocol import params


def field_schema(spec: params.Spec) -> dict[str, Any]:
    """One field's description (see the module docstring)."""
    described: dict[str, Any] = {"type": "other"}
    if isinstance(spec, params.Int):
        described = {"type": "integer", "min": spec.min, "max": spec.max}
    elif isinstance(spec, params.Number):
        described = {"type": "number", "min": spec.min, "max": spec.max}
    elif isinstance(spec, params.Pixels):
        described = {"type": "pixels", "min": spec.min, "max": spec.max}
    elif isinstance(spec, params.Bool):
        described = {"type": "boolean"}
    elif isinstance(spec, params.Enum):
        described = {"type": "enum", "choices": list(spec.choices)}
    elif isinstance(spec, params.Color):
        described = {"type": "color"}
    elif isinstance(spec, params.Str):
        described = {"type": "string", "min_length": spec.min_len, "max_length": spec.max_len}
        if spec.pattern is not None:
            described["pattern"] = spec.pattern
    elif isinstance(spec, params.RelativePath):
        described = {"type": "path", "max_length": spec.max_len}
    elif isinstance(spec, params.Object):
        described = {"type": "object", "fields": {key: field_schema(child) for key, child in spec.fields.items()}}
    elif isinstance(spec, params.MapOf):
        described = {"type": "map", "key_pattern": spec.key_pattern, "key_doc": spec.key_doc, "value": field_schema(spec.value)}
    elif isinstance(spec, params.ListOf):
        described = {"type": "list", "item": field_schema(spec.item), "max_items": spec.max_items}
        if spec.unique is not None:
            described["unique"] = spec.unique
    described["description"] = spec.describe()
    if spec.default is params.REQUIRED:
        described["required"] = True
    elif spec.default is params.AUTO:
        described["auto"] = True
    else:
        described["default"] = copy.deepcopy(spec.default)
    if spec.doc:
        described["doc"] = spec.doc
    return described


def kind_schema(kind: params.NodeKind) -> dict[str, Any]:
    """One node kind's description (see the module docstring)."""
    input_pins: list[str] | str = "num_inputs" if kind.role == params.COMPOSITOR else list(params.input_pins(kind.name, {}))
    return {
        "role": kind.role,
        "summary": kind.summary,
        "notes": list(kind.notes),
        "fields": {key: field_schema(spec) for key, spec in kind.schema.fields.items()},
        "input_pins": input_pins,
        "output_pins": list(params.output_pins(kind.name)),
    }


def schema_document() -> dict[str, Any]:
    """Every node kind, in the order docs/PARAMS.md lists them."""
    return {name: kind_schema(kind) for name, kind in params.KINDS.items()}
