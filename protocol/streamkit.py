"""StreamKit's wire shapes beside compositord's own (docs/PROTOCOL.md, "StreamKit clients"); sans-IO.

StreamKit's web UI (its public repository, ``ui/src``) speaks the envelope of
PROTOCOL.md section 2 with a few shapes of its own. This module turns them
into compositord's, and compositord's into theirs, as pure functions:

In (any connection: these are alternative spellings, never a second meaning):

- :func:`canonical_params`: a compositor's text overlays with ``color`` as
  ``[r, g, b, a]`` (0..255) and ``font_name``, image overlays as
  ``data_base64`` (the image inline) and overlays without ``id`` become the
  canonical ``#RRGGBBAA``, ``font``, ``asset_path`` and ``text_N`` / ``img_N``
  (the ids StreamKit's UI gives overlays without one). An inline image is
  addressed by its content: ``inline/<sha256>.<ext>`` in the asset directory;
  its bytes come back as an :class:`InlineImage` for the daemon to store
  before the params are used. Durable params keep one form either way.

For connections that asked for StreamKit's dialect (:data:`STREAMKIT`):

- :func:`merge_update`: StreamKit's ``UpdateParams`` merges into the node's
  params (objects key by key at any depth; arrays, scalars and ``null``
  replace), where compositord's replaces them whole.
- :func:`event_for_streamkit`: events in StreamKit's shapes (node states,
  stats, ISO-8601 timestamps, overlay spellings).

For everyone (additive fields of compositord's own answers, and the HTTP API):
:func:`pipeline_object`, :func:`session_info`, :func:`node_definitions`,
:func:`packet_types`, :func:`node_state`, :func:`iso_timestamp`.
"""

from __future__ import annotations

import base64
import binascii
import copy
import datetime
import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from compositord.protocol import params as node_params
from compositord.protocol import pointer
from compositord.protocol.errors import ErrorCode, FieldError, RemoteProtocolError
from compositord.protocol.schema import node_kind_schemas

# The dialect a connection asks for: the query parameter `compat=streamkit`, or the header.
STREAMKIT = "streamkit"
DIALECTS = (STREAMKIT,)
COMPAT_QUERY = "compat"
COMPAT_HEADER = "X-Compositord-Compat"

# Inline images: at most this many bytes each (decoded), stored under this folder of the asset directory.
MAX_INLINE_IMAGE_BYTES = 4 * 1024 * 1024
INLINE_IMAGE_DIR = "inline"
_IMAGE_SIGNATURES: tuple[tuple[str, Callable[[bytes], bool]], ...] = (
    ("png", lambda data: data.startswith(b"\x89PNG\r\n\x1a\n")),
    ("jpg", lambda data: data.startswith(b"\xff\xd8\xff")),
    ("gif", lambda data: data[:6] in (b"GIF87a", b"GIF89a")),
    ("webp", lambda data: data[:4] == b"RIFF" and data[8:12] == b"WEBP"),
)
_DATA_URL = re.compile(r"data:image/[A-Za-z0-9.+-]+;base64,")
INLINE_ASSET_PATH = re.compile(rf"{INLINE_IMAGE_DIR}/[0-9a-f]{{64}}\.(png|jpg|gif|webp)")

# StreamKit names its built-in fonts with tokens ("dejavu-sans"); compositord bundles one font.
_FONT_TOKEN = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
BUNDLED_FONT = "default"

# StreamKit's NodeState values for compositord's two states.
RUNNING = "Running"
FAILED = "Failed"


@dataclass(frozen=True)
class InlineImage:
    """An image a client sent inline: to be stored at ``asset_path`` (inside the asset directory)."""

    asset_path: str
    data: bytes


@dataclass(frozen=True)
class Canonical:
    params: Any  # the params with StreamKit's spellings rewritten (still to be validated)
    images: tuple[InlineImage, ...] = ()


# --------------------------------------------------------------------------- in: spellings


def canonical_params(params: Any, *, path: str = "") -> Canonical:
    """``params`` (any node's, or a merge patch of them) with StreamKit's overlay spellings rewritten.

    Pure: returns new containers, never changes ``params``. Only the
    compositor's ``text_overlays`` / ``image_overlays`` lists have other
    spellings; everything else is left for :func:`params.validate` to judge.
    A malformed alternative spelling is ``invalid_params`` at its path (under
    ``path``), with every such problem listed.
    """
    if not isinstance(params, Mapping):
        return Canonical(params)
    errors: list[FieldError] = []
    images: list[InlineImage] = []
    result = dict(params)
    texts, pictures = params.get("text_overlays"), params.get("image_overlays")
    if isinstance(texts, list):
        base = pointer.join(path, "text_overlays")
        result["text_overlays"] = [_text_overlay(item, i, pointer.join(base, i), errors) for i, item in enumerate(texts)]
    if isinstance(pictures, list):
        base = pointer.join(path, "image_overlays")
        result["image_overlays"] = [
            _image_overlay(item, i, pointer.join(base, i), errors, images) for i, item in enumerate(pictures)
        ]
    if errors:
        raise RemoteProtocolError.from_field_errors(ErrorCode.INVALID_PARAMS, errors)
    unique = {image.asset_path: image for image in images}
    return Canonical(result, tuple(unique.values()))


def _text_overlay(item: Any, index: int, path: str, errors: list[FieldError]) -> Any:
    if not isinstance(item, Mapping):
        return item
    overlay = dict(item)
    overlay.setdefault("id", f"text_{index}")
    color = overlay.get("color")
    if isinstance(color, list):
        overlay["color"] = _hex_color(color, pointer.join(path, "color"), errors)
    if "font_name" in overlay:
        font_name = overlay.pop("font_name")
        font_path = pointer.join(path, "font_name")
        if font_name is None:
            pass  # StreamKit's "no font given": the bundled one
        elif not isinstance(font_name, str) or not font_name:
            errors.append(FieldError(font_path, "expected a font name or a font file in the asset directory"))
        else:
            font = BUNDLED_FONT if _FONT_TOKEN.fullmatch(font_name) else font_name
            if "font" in overlay and overlay["font"] != font:
                errors.append(FieldError(font_path, f"names another font than font ({overlay['font']!r}): give one of them"))
            overlay["font"] = font
    return overlay


def _hex_color(color: list[Any], path: str, errors: list[FieldError]) -> Any:
    """``[r, g, b]`` or ``[r, g, b, a]``, integers 0..255, as ``#RRGGBBAA``."""
    if len(color) not in (3, 4):
        errors.append(FieldError(path, "an [r, g, b, a] colour has 3 or 4 items"))
        return color
    channels: list[int] = []
    for index, value in enumerate(color):
        whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        if isinstance(value, bool) or not whole or not 0 <= value <= 255:
            errors.append(FieldError(pointer.join(path, index), "expected an integer 0..255"))
        else:
            channels.append(int(value))
    if len(channels) != len(color):
        return color
    if len(channels) == 3:
        channels.append(255)
    return "#" + "".join(f"{channel:02X}" for channel in channels)


def _image_overlay(item: Any, index: int, path: str, errors: list[FieldError], images: list[InlineImage]) -> Any:
    if not isinstance(item, Mapping):
        return item
    overlay = dict(item)
    overlay.setdefault("id", f"img_{index}")
    if "data_base64" not in overlay:
        return overlay
    encoded = overlay.pop("data_base64")
    data_path = pointer.join(path, "data_base64")
    image = inline_image(encoded, data_path, errors)
    if image is None:
        return overlay
    given = overlay.get("asset_path")
    if given is not None and given != image.asset_path:
        errors.append(FieldError(data_path, f"is not the image at asset_path ({given!r}): give one of them"))
        return overlay
    overlay["asset_path"] = image.asset_path
    images.append(image)
    return overlay


def inline_image(encoded: Any, path: str, errors: list[FieldError]) -> InlineImage | None:
    """An inline image (base64, optionally a ``data:image/...;base64,`` URL) and where it is stored."""
    if not isinstance(encoded, str) or not encoded:
        errors.append(FieldError(path, "expected the image as a non-empty base64 string"))
        return None
    prefix = _DATA_URL.match(encoded)
    text = encoded[prefix.end() :] if prefix else encoded
    if len(text) > (MAX_INLINE_IMAGE_BYTES + 2) // 3 * 4:
        errors.append(FieldError(path, f"an inline image has at most {MAX_INLINE_IMAGE_BYTES} bytes"))
        return None
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        errors.append(FieldError(path, "not valid base64"))
        return None
    suffix = next((name for name, matches in _IMAGE_SIGNATURES if matches(data)), None)
    if suffix is None:
        errors.append(FieldError(path, "not a PNG, JPEG, GIF or WebP image"))
        return None
    return InlineImage(f"{INLINE_IMAGE_DIR}/{hashlib.sha256(data).hexdigest()}.{suffix}", data)


# --------------------------------------------------------------------------- in: UpdateParams merges


def merge_update(target: Any, update: Any) -> Any:
    """StreamKit's ``UpdateParams``: ``update`` merged into ``target``; pure.

    Objects merge key by key at any depth; an array, a scalar or ``null`` in
    ``update`` replaces what ``target`` has (unlike RFC 7396, ``null`` does
    not delete: it sets, and an "auto" field set to ``null`` is absent once validated).
    """
    if not (isinstance(target, Mapping) and isinstance(update, Mapping)):
        return copy.deepcopy(update)
    result = dict(target)
    for key, value in update.items():
        result[key] = merge_update(result[key], value) if key in result else copy.deepcopy(value)
    return result


# --------------------------------------------------------------------------- out


ImageData = Callable[[str], "str | None"]
"""The base64 of an inline image by its asset path, when the daemon still has it (None: not known)."""


def iso_timestamp(seconds: float) -> str:
    """Seconds since the epoch as ISO 8601 / RFC 3339 in UTC, milliseconds: ``2026-01-02T03:04:05.678Z``."""
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def node_state(state: Any) -> Any:
    """StreamKit's ``NodeState`` for compositord's ``"ok"`` / ``{"error": why}``: ``"Running"`` / ``{"Failed": {"reason"}}``."""
    if isinstance(state, Mapping) and isinstance(state.get("error"), str):
        return {FAILED: {"reason": state["error"]}}
    return RUNNING


def params_for_streamkit(params: Any, image_data: ImageData | None = None) -> Any:
    """Durable params as StreamKit spells them: overlay colours ``[r, g, b, a]``, ``font_name``,
    and an inline image's ``data_base64`` beside its ``asset_path`` when ``image_data`` has it."""
    if not isinstance(params, Mapping):
        return params
    result = dict(params)
    texts, pictures = params.get("text_overlays"), params.get("image_overlays")
    if isinstance(texts, list):
        result["text_overlays"] = [_text_for_streamkit(item) for item in texts]
    if isinstance(pictures, list) and image_data is not None:
        result["image_overlays"] = [_image_for_streamkit(item, image_data) for item in pictures]
    return result


def _text_for_streamkit(item: Any) -> Any:
    if not isinstance(item, Mapping):
        return item
    overlay = dict(item)
    color = overlay.get("color")
    if isinstance(color, str) and re.fullmatch(r"#[0-9A-Fa-f]{8}", color):
        overlay["color"] = [int(color[i : i + 2], 16) for i in (1, 3, 5, 7)]
    if "font" in overlay:
        overlay["font_name"] = overlay.pop("font")
    return overlay


def _image_for_streamkit(item: Any, image_data: ImageData) -> Any:
    if not isinstance(item, Mapping) or not isinstance(item.get("asset_path"), str):
        return item
    if INLINE_ASSET_PATH.fullmatch(item["asset_path"]) is None:
        return item
    encoded = image_data(item["asset_path"])
    return item if encoded is None else {**item, "data_base64": encoded}


def stats_for_streamkit(stats: Mapping[str, Any], duration_secs: float) -> dict[str, Any]:
    """compositord's node stats plus StreamKit's ``NodeStats`` (``received``, ``sent``, ``discarded``,
    ``errored``, ``duration_secs``), counted in frames from what the node reports."""

    def first(*keys: str) -> int:
        return next((int(stats[key]) for key in keys if isinstance(stats.get(key), (int, float))), 0)

    return {
        **stats,
        "received": first("frames_received", "frames_offered", "frames_decoded", "frames_rendered"),
        "sent": first("frames_written", "frames_rendered", "frames_decoded", "frames_received"),
        "discarded": first("frames_dropped"),
        "errored": 0,  # a node that fails is in the error state (nodestatechanged); nothing is counted
        "duration_secs": round(max(0.0, duration_secs), 3),
    }


def event_for_streamkit(
    event_name: str,
    payload: Mapping[str, Any],
    *,
    now: float,
    image_data: ImageData | None = None,
    session_age_s: float | None = None,
) -> dict[str, Any]:
    """The payload of an event (without its tag) as a StreamKit client reads it; ``now`` is the wall clock.

    ``nodestatechanged``: ``state`` as :func:`node_state`, plus ``timestamp``;
    ``nodestatsupdated``: ``stats`` as :func:`stats_for_streamkit`, plus ``timestamp``;
    ``nodeviewdataupdated``: ``timestamp`` as ISO 8601; ``nodeparamschanged`` and
    ``nodeadded``: params as :func:`params_for_streamkit`. Others are unchanged.
    """
    result = dict(payload)
    if event_name == "nodestatechanged":
        result["state"] = node_state(payload.get("state"))
        result["timestamp"] = iso_timestamp(now)
    elif event_name == "nodestatsupdated":
        stats = payload.get("stats")
        result["stats"] = stats_for_streamkit(stats if isinstance(stats, Mapping) else {}, session_age_s or 0.0)
        result["timestamp"] = iso_timestamp(now)
    elif event_name == "nodeviewdataupdated":
        stamp = payload.get("timestamp")
        result["timestamp"] = iso_timestamp(float(stamp)) if isinstance(stamp, (int, float)) else iso_timestamp(now)
    elif event_name in ("nodeparamschanged", "nodeadded"):
        result["params"] = params_for_streamkit(payload.get("params"), image_data)
    return result


# --------------------------------------------------------------------------- additive answers and the HTTP API


def session_info(session_id: str, name: str, created_at: float) -> dict[str, Any]:
    """StreamKit's ``SessionInfo``: ``id``, ``name``, ``created_at`` (ISO 8601)."""
    return {"id": session_id, "name": name, "created_at": iso_timestamp(created_at)}


def pipeline_object(
    name: str,
    nodes: Mapping[str, Mapping[str, Any]],
    connections: Sequence[Mapping[str, Any]],
    view_data: Mapping[str, Mapping[str, Any]],
    image_data: ImageData | None = None,
) -> dict[str, Any]:
    """StreamKit's ``Pipeline``: ``nodes`` ``{id: {kind, params, state}}`` (state as compositord gives it,
    turned into StreamKit's), the connections, ``view_data`` ``{id: layout}``; a session is ``dynamic``."""
    return {
        "name": name,
        "description": None,
        "mode": "dynamic",
        "nodes": {
            node_id: {
                "kind": node["kind"],
                "params": params_for_streamkit(node["params"], image_data),
                "state": node_state(node.get("state")),
            }
            for node_id, node in nodes.items()
        },
        "connections": [dict(c) for c in connections],
        "view_data": {node_id: dict(data) for node_id, data in view_data.items()},
    }


_VIDEO_TYPES = [{"RawVideo": {"width": None, "height": None, "pixel_format": fmt}} for fmt in ("Rgba8", "I420", "Nv12")]
_VIDEO_OUT = {"RawVideo": {"width": None, "height": None, "pixel_format": "Rgba8"}}


def node_definitions() -> list[dict[str, Any]]:
    """StreamKit's ``NodeDefinition`` of every node kind: ``param_schema`` is the kind's JSON Schema
    (:func:`compositord.protocol.schema.node_kind_schemas`); the compositor's inputs are the family
    ``in_N`` (StreamKit's dynamic pins with prefix ``in``)."""
    schemas = node_kind_schemas()
    definitions = []
    for kind_name in node_params.NODE_KINDS:
        kind = node_params.KINDS[kind_name]
        inputs: list[dict[str, Any]] = []
        if kind.role == node_params.COMPOSITOR:
            inputs = [{"name": "in", "accepts_types": _VIDEO_TYPES, "cardinality": {"Dynamic": {"prefix": "in"}}}]
        elif kind.role == node_params.SINK:
            inputs = [{"name": "in", "accepts_types": _VIDEO_TYPES, "cardinality": "One"}]
        outputs = (
            [] if kind.role == node_params.SINK else [{"name": "out", "produces_type": _VIDEO_OUT, "cardinality": "Broadcast"}]
        )
        definitions.append(
            {
                "kind": kind_name,
                "description": schemas[kind_name]["description"],
                "param_schema": schemas[kind_name],
                "inputs": inputs,
                "outputs": outputs,
                "categories": ["video", kind.role],
                "bidirectional": False,
            }
        )
    return definitions


def packet_types() -> list[dict[str, Any]]:
    """StreamKit's ``PacketTypeMeta`` list: compositord moves raw video only."""
    return [
        {
            "id": "RawVideo",
            "label": "Raw Video",
            "color": "#4A90D9",
            "display_template": "Raw Video ({width|*}x{height|*}, {pixel_format})",
            "compatibility": {
                "kind": "structfieldwildcard",
                "fields": [
                    {"name": "width", "wildcard_value": None},
                    {"name": "height", "wildcard_value": None},
                    {"name": "pixel_format", "wildcard_value": None},
                ],
            },
        }
    ]
