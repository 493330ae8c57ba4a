"""What a pipeline will cost before anything is allocated, and the checks against the daemon's budgets.

Pure functions over validated params (no I/O, no GL): the control process
calls them before it stores a change, so that a small request cannot make an
engine allocate gigabytes (a 953-byte ``createsession`` with 7680x7680
canvases, a 1.4 KB tune with twelve 8192x8192 text overlays). A change that
would pass a budget is refused with ``resource_limit``, naming the field
that pushes it over and what would fit.

The model, per node, in bytes (docs/OPERATIONS.md, "Budgets", explains how
to size the budgets with it):

- ``video::compositor``: its canvas, per pixel: the RGBA render target and
  the GL driver's working memory for it (4 + :data:`DRIVER_BYTES_PER_PIXEL`),
  the NV12 / I420 planes (1.5, for those formats), three read-back frames
  (the planes read, the frame they are joined into, and the one the loop
  keeps as its latest output), and for
  the sinks it feeds the frames their queues may hold (the deepest queue:
  sinks share each frame) plus, per encoding sink, a 4:2:0 conversion and
  the encoder's own look-ahead (:data:`ENCODER_FRAMES`). Text overlays: the
  raster of the overlay rect (or of the text's estimated size when the rect
  has none), capped at :data:`MAX_TEXT_RASTER_SIDE` a side, as a texture and
  the CPU raster it is made from, once per distinct raster (overlays with the
  same text, style and size share one, as in the renderer). Image overlays:
  the decoded image and its texture, one per asset. With ``scenes``: the
  canvases a transition draws into (:data:`TRANSITION_CANVASES`); with a
  ``preview_scene``: the preview pin's own render target and read-back.
- Every source feeding a compositor pin: a texture of the source's size
  (RGBA, plus the planes of a YUV source) per connection.
- Sources' own frames (:data:`SOURCE_MODELS`, one entry per source kind):
  ``video::colorbars``, ``video::push`` and ``video::capture`` by their
  params; ``video::image``, ``video::file`` and ``av::stream_in`` by the size
  the caller knows (``media_sizes``, e.g. what the engine reported) or else
  :data:`ASSUMED_MEDIA_SIZE`: their pixels are in files or streams that only
  the engine opens. A live input keeps its paced queue (:data:`CAPTURE_FRAMES`,
  :data:`STREAM_IN_FRAMES`).
- Sources of sound only (kinds ``audio::*``): :data:`AUDIO_SOURCE_BYTES`
  each, a fixed cost (their buffers do not depend on any param); no texture.
- Every session: :data:`SESSION_OVERHEAD_BYTES` (a render thread and its GL
  context).

Rates: a compositor draws ``width * height * fps`` pixels a second; the sum
over every session is held under ``max_total_pixels_per_second``.

The costs are estimates of what stays allocated, measured against the
daemon's resident memory on llvmpipe (docs/RELIABILITY.md); what matters is
that they grow as the allocations do, so the budget bounds them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from compositord.protocol import pointer
from compositord.protocol.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from compositord.protocol.params import AUDIO_KIND_PREFIX, KINDS, with_defaults

MAX_TEXT_RASTER_SIDE = 8192
"""The renderer clips a text raster to this many pixels a side (daemon/engine/render/text.py uses it)."""

ASSUMED_MEDIA_SIZE = (1920, 1080)
"""The size counted for an image or video file whose size the caller does not know."""

SESSION_OVERHEAD_BYTES = 8 * 1024 * 1024
"""A session's render thread and GL context, before any canvas."""

AUDIO_SOURCE_BYTES = 2 * 1024 * 1024
"""A source of sound: its bus-format buffer (2 s of 48 kHz stereo float, 750 KiB), what waits for its
converter thread (at most 1 MiB) and the resampler (daemon/engine/audio/push.py; a test keeps this above them)."""

# Frames a sink's queue may hold (daemon/engine/sinks: ``queue_capacity``; a test keeps them equal).
SINK_QUEUE_FRAMES: Mapping[str, int] = {
    "sink::file": 8,
    "sink::y4m": 8,
    "sink::stream": 4,
    "sink::window": 2,
    "sink::preview": 1,
}
ENCODING_SINKS = frozenset({"sink::file", "sink::stream"})
READBACK_FRAMES = 3
DRIVER_BYTES_PER_PIXEL = 4.0
"""What llvmpipe keeps per pixel of a canvas besides the target (measured: a 1920x1080 canvas costs that much more)."""
ENCODER_FRAMES = 16
"""4:2:0 frames an encoder holds (x264's look-ahead and reference frames at the presets offered)."""

# Bytes per pixel of the pixel formats.
FORMAT_BYTES_PER_PIXEL: Mapping[str, float] = {"rgba8": 4.0, "nv12": 1.5, "i420": 1.5}
RGBA = 4.0
YUV420 = 1.5
TRANSITION_CANVASES = 3  # daemon/engine/render/renderer.py: "outgoing", "incoming", "snapshot"

# Text estimate for an overlay without a rect size: the bundled font's widest glyphs are about one em,
# and a line is about 1.2 em plus Pillow's 4-pixel spacing.
TEXT_ADVANCE_EM = 1.0
TEXT_LINE_EM = 1.2
TEXT_LINE_SPACING_PX = 4


@dataclass(frozen=True)
class BudgetLimits:
    """The daemon's budgets (``daemon/config.py`` ``Limits`` holds the operator's values)."""

    max_session_bytes: int
    max_total_bytes: int
    max_sessions: int
    max_total_pixels_per_second: int


@dataclass(frozen=True)
class CostItem:
    """Memory that one field of the pipeline decides.

    ``pointer`` names that field inside the pipeline document
    (``/nodes/comp/params/width``); ``width``, ``height`` and
    ``bytes_per_pixel`` say how the cost scales, so a refusal can say what
    size would fit; ``what`` says what is counted.
    """

    pointer: str
    what: str
    width: int
    height: int
    bytes_per_pixel: float
    fixed: bool = False  # no size of the field makes it smaller (a source of sound): nothing "would fit"

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def bytes(self) -> int:
        return math.ceil(self.pixels * self.bytes_per_pixel)

    def fitting(self, room: int) -> tuple[int, int] | None:
        """The largest size of the same aspect ratio whose cost fits in ``room`` bytes; None when none does."""
        pixels = room / self.bytes_per_pixel
        scale = min(1.0, math.sqrt(pixels / self.pixels)) if pixels > 0 else 0.0
        width, height = math.floor(self.width * scale), math.floor(self.height * scale)
        return (width, height) if width >= 1 and height >= 1 else None


@dataclass(frozen=True)
class RateItem:
    """Pixels a second that one compositor draws."""

    pointer: str  # the compositor's fps
    node_id: str
    width: int
    height: int
    fps: int

    @property
    def pixels_per_second(self) -> int:
        return self.width * self.height * self.fps


@dataclass(frozen=True)
class SessionCost:
    """What a session costs: every item, and the totals."""

    items: tuple[CostItem, ...]
    rates: tuple[RateItem, ...] = ()
    overhead_bytes: int = SESSION_OVERHEAD_BYTES
    by_pointer: Mapping[str, int] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        totals: dict[str, int] = {}
        for item in self.items:
            totals[item.pointer] = totals.get(item.pointer, 0) + item.bytes
        object.__setattr__(self, "by_pointer", totals)

    @property
    def bytes(self) -> int:
        return self.overhead_bytes + sum(item.bytes for item in self.items)

    @property
    def pixels_per_second(self) -> int:
        return sum(rate.pixels_per_second for rate in self.rates)


# ---------------------------------------------------------------------------
# Costs


def _text_size(overlay: Mapping[str, Any]) -> tuple[int, int]:
    """The raster size of a text overlay: its rect, else the text's estimated size; clipped as the renderer clips it."""
    rect = overlay.get("rect") or {}
    font_size = max(1, round(float(overlay.get("font_size", 32.0))))
    lines = str(overlay.get("text", "")).split("\n")
    estimated_w = math.ceil(max(len(line) for line in lines) * font_size * TEXT_ADVANCE_EM)
    estimated_h = math.ceil(len(lines) * (font_size * TEXT_LINE_EM + TEXT_LINE_SPACING_PX))
    rect_width, rect_height = rect.get("width"), rect.get("height")
    width = rect_width if rect_width is not None else estimated_w
    height = rect_height if rect_height is not None else estimated_h
    return (max(1, min(math.ceil(width), MAX_TEXT_RASTER_SIDE)), max(1, min(math.ceil(height), MAX_TEXT_RASTER_SIDE)))


def _text_pointer(base: str, index: int, overlay: Mapping[str, Any]) -> str:
    """The field that decides a text raster's size: the rect when it has a size, else the font size."""
    rect = overlay.get("rect") or {}
    here = pointer.join(base, "text_overlays", index)
    if rect.get("width") is not None or rect.get("height") is not None:
        return pointer.join(here, "rect")
    return pointer.join(here, "font_size")


@dataclass(frozen=True)
class SourceModel:
    """How one source kind is counted: where its picture size comes from, the field a refusal names, the
    frames it keeps of its own (bytes per pixel and what they are), and whether a compositor uploads it
    through YUV planes as well as RGBA."""

    size_from_params: bool  # width/height params; else the size the caller knows (``media_sizes``) or assumed
    field: str  # the param a refusal points at
    frames: Callable[[Mapping[str, Any]], tuple[float, str]]
    yuv: Callable[[Mapping[str, Any]], bool]


# A live input keeps its pacer's queue (``sources/pacing.py``), the frame being decoded and the one shown. A
# stream's queue is deeper: its pictures wait for sound that arrives later than they do (sources/stream_in.py).
CAPTURE_FRAMES = 8 + 2
STREAM_IN_FRAMES = 24 + 2


def _colorbars_frames(params: Mapping[str, Any]) -> tuple[float, str]:
    moving = params.get("animated") or params.get("timestamp")
    return (3 * RGBA, "RGBA frames (shown, uploaded, being made)") if moving else (RGBA, "one RGBA frame")


SOURCE_MODELS: Mapping[str, SourceModel] = {
    "video::colorbars": SourceModel(True, "width", _colorbars_frames, lambda params: False),
    "video::push": SourceModel(
        True,
        "width",
        lambda params: (2 * FORMAT_BYTES_PER_PIXEL[params["pixel_format"]], "the pushed frame and the one arriving"),
        lambda params: params["pixel_format"] != "rgba8",
    ),
    "video::image": SourceModel(
        False, "asset_path", lambda params: (2 * RGBA, "the decoded image and its premultiplied copy"), lambda params: False
    ),
    "video::file": SourceModel(
        False, "path", lambda params: (3 * YUV420, "decoded frames (decoder, hand-off slot, the one shown)"), lambda params: True
    ),
    "video::capture": SourceModel(
        True,
        "width",
        lambda params: (CAPTURE_FRAMES * YUV420, f"{CAPTURE_FRAMES} I420 frames (paced queue, decoder, shown)"),
        lambda params: True,
    ),
    # A stream's size is the publisher's: counted as the caller knows it, else ASSUMED_MEDIA_SIZE.
    "av::stream_in": SourceModel(
        False,
        "url",
        lambda params: (STREAM_IN_FRAMES * YUV420, f"{STREAM_IN_FRAMES} I420 frames (paced queue, decoder, shown)"),
        lambda params: True,
    ),
}


def _source_model(kind: str) -> SourceModel:
    model = SOURCE_MODELS.get(kind)
    if model is None:
        raise LocalProtocolError(f"no source cost for {kind!r}: every source kind with a picture needs an entry in SOURCE_MODELS")
    return model


def _source_size(
    node_id: str, kind: str, params: Mapping[str, Any], media_sizes: Mapping[str, tuple[int, int]]
) -> tuple[int, int]:
    if _source_model(kind).size_from_params:
        return (int(params["width"]), int(params["height"]))
    return media_sizes.get(node_id, ASSUMED_MEDIA_SIZE)


def _source_pointer(base: str, kind: str) -> str:
    return pointer.join(base, _source_model(kind).field)


def _source_frames(kind: str, params: Mapping[str, Any]) -> tuple[float, str]:
    """Bytes per pixel a source keeps of its own frames, and what they are."""
    return _source_model(kind).frames(params)


def _texture_bytes_per_pixel(kind: str, params: Mapping[str, Any]) -> float:
    """A compositor's texture of one source: RGBA, plus the planes a YUV source is uploaded through."""
    return RGBA + (YUV420 if _source_model(kind).yuv(params) else 0.0)


def _compositor_items(
    node_id: str,
    full: Mapping[str, Any],
    base: str,
    sinks: Sequence[str],
    media_sizes: Mapping[str, tuple[int, int]],
) -> list[CostItem]:
    """``full``: the compositor's params with defaults filled in."""
    width, height = full["width"], full["height"]
    output = FORMAT_BYTES_PER_PIXEL[full["output_format"]]
    per_pixel = RGBA + DRIVER_BYTES_PER_PIXEL + (0.0 if full["output_format"] == "rgba8" else YUV420) + READBACK_FRAMES * output
    parts = ["render target", f"{READBACK_FRAMES} read-back frames"]
    if sinks:
        queued = max(SINK_QUEUE_FRAMES[kind] for kind in sinks)
        encoders = sum(1 for kind in sinks if kind in ENCODING_SINKS)
        per_pixel += queued * output + encoders * (YUV420 + ENCODER_FRAMES * YUV420)
        parts.append(f"{queued} queued frames for {len(sinks)} sink(s)")
        if encoders:
            parts.append(f"{encoders} encoder(s)")
    items = [
        CostItem(
            pointer.join(base, "width"),
            f"compositor {node_id!r}: a {width}x{height} {full['output_format']} canvas ({', '.join(parts)})",
            width,
            height,
            per_pixel,
        )
    ]
    if full["scenes"]:
        # Made on demand by a transition: the outgoing and incoming scenes' canvases and the snapshot it may start from.
        items.append(
            CostItem(
                pointer.join(base, "scenes"),
                f"compositor {node_id!r}: transition canvases (outgoing, incoming, snapshot), {width}x{height} RGBA each",
                width,
                height,
                TRANSITION_CANVASES * RGBA,
            )
        )
    if full["preview_scene"] is not None:
        preview_per_pixel = RGBA + DRIVER_BYTES_PER_PIXEL + (0.0 if full["output_format"] == "rgba8" else YUV420)
        items.append(
            CostItem(
                pointer.join(base, "preview_scene"),
                f"compositor {node_id!r}: the preview pin's render target and {READBACK_FRAMES} read-back frames",
                width,
                height,
                preview_per_pixel + READBACK_FRAMES * output,
            )
        )
    # Overlays of every layout: the top level and each scene (any of them may be on program, preview or in a
    # transition, and a text raster stays cached), each distinct raster and asset counted once.
    layouts = [(base, full)] + [(pointer.join(base, "scenes", name), scene) for name, scene in full["scenes"].items()]
    rasters: set[tuple[Any, ...]] = set()
    seen_assets: set[str] = set()
    for layout_base, layout in layouts:
        for index, overlay in enumerate(layout["text_overlays"]):
            w, h = _text_size(overlay)
            raster = (overlay["text"], overlay["color"], round(overlay["font_size"]), overlay["font"], w, h)
            if raster in rasters:
                continue  # the renderer keeps one texture per distinct raster
            rasters.add(raster)
            items.append(
                CostItem(
                    _text_pointer(layout_base, index, overlay),
                    f"compositor {node_id!r}: text overlay {overlay.get('id')!r}, a {w}x{h} raster and its texture",
                    w,
                    h,
                    2 * RGBA,
                )
            )
        for index, overlay in enumerate(layout["image_overlays"]):
            asset = str(overlay["asset_path"])
            if asset in seen_assets:
                continue  # one texture per asset
            seen_assets.add(asset)
            w, h = media_sizes.get(asset, ASSUMED_MEDIA_SIZE)
            items.append(
                CostItem(
                    pointer.join(layout_base, "image_overlays", index, "asset_path"),
                    f"compositor {node_id!r}: image overlay {asset!r} ({w}x{h}), decoded and as a texture",
                    w,
                    h,
                    2 * RGBA,
                )
            )
    return items


# The top-level params of a kind that no cost reads: a change of only these leaves the session's cost as it
# was, so a tune that moves, fades or cuts layers (a drag: one tune a frame) is not costed again. A field not
# listed may change the cost: a new field is costed until it is added here, with a case in the test that
# proves it neutral (tests/test_budget.py).
COST_NEUTRAL_FIELDS: Mapping[str, frozenset[str]] = {
    "video::compositor": frozenset(
        {"layers", "background", "color_matrix", "program_scene", "transition", "transition_position"}
    ),
}


def cost_unchanged_by(kind: str, changed_fields: Iterable[str]) -> bool:
    """Whether changing only these top-level params of a ``kind`` node leaves the session's cost as it was."""
    neutral = COST_NEUTRAL_FIELDS.get(kind)
    return neutral is not None and all(field in neutral for field in changed_fields)


def session_cost(pipeline: Mapping[str, Any], *, media_sizes: Mapping[str, tuple[int, int]] | None = None) -> SessionCost:
    """What a validated pipeline (``{"nodes": {id: {"kind", "params"}}, "connections": [...]}``) will cost.

    ``media_sizes`` maps a ``video::image`` / ``video::file`` node id, or an
    image overlay's ``asset_path``, to its pixel size when the caller knows
    it; otherwise :data:`ASSUMED_MEDIA_SIZE` is counted.
    """
    sizes = media_sizes or {}
    nodes: Mapping[str, Mapping[str, Any]] = pipeline.get("nodes", {})
    connections: Sequence[Mapping[str, str]] = pipeline.get("connections", [])
    for node_id, node in nodes.items():
        if node.get("kind") not in KINDS:
            raise LocalProtocolError(f"session_cost takes validated pipelines: node {node_id!r} has kind {node.get('kind')!r}")
    sinks_of: dict[str, list[str]] = {}
    for conn in connections:
        target = nodes.get(conn["to_node"])
        if target is not None and target["kind"] in SINK_QUEUE_FRAMES:
            sinks_of.setdefault(conn["from_node"], []).append(target["kind"])
    # Filled in once per node: defaults are most of the work, and a session is checked at every tune.
    full_params = {
        node_id: with_defaults(node["kind"], node.get("params", {}))
        for node_id, node in nodes.items()
        if node["kind"] == "video::compositor" or KINDS[node["kind"]].role == "source"
    }
    items: list[CostItem] = []
    rates: list[RateItem] = []
    for node_id, node in nodes.items():
        kind = node["kind"]
        base = pointer.join("/nodes", node_id, "params")
        if kind == "video::compositor":
            full = full_params[node_id]
            items += _compositor_items(node_id, full, base, sinks_of.get(node_id, []), sizes)
            rates.append(RateItem(pointer.join(base, "fps"), node_id, full["width"], full["height"], full["fps"]))
        elif kind.startswith(AUDIO_KIND_PREFIX):
            items.append(CostItem(base, f"{kind} {node_id!r}: its sound buffers", AUDIO_SOURCE_BYTES, 1, 1.0, fixed=True))
        elif KINDS[kind].role == "source":
            full = full_params[node_id]
            width, height = _source_size(node_id, kind, full, sizes)
            per_pixel, what = _source_frames(kind, full)
            items.append(
                CostItem(_source_pointer(base, kind), f"{kind} {node_id!r} ({width}x{height}): {what}", width, height, per_pixel)
            )
    for conn in connections:
        source, target = nodes.get(conn["from_node"]), nodes.get(conn["to_node"])
        if source is None or target is None or target["kind"] != "video::compositor" or KINDS[source["kind"]].role != "source":
            continue
        if source["kind"].startswith(AUDIO_KIND_PREFIX):
            continue  # sound only: no texture
        full = full_params[conn["from_node"]]
        width, height = _source_size(conn["from_node"], source["kind"], full, sizes)
        items.append(
            CostItem(
                _source_pointer(pointer.join("/nodes", conn["from_node"], "params"), source["kind"]),
                f"compositor {conn['to_node']!r}: the texture of {conn['from_node']!r} ({width}x{height})",
                width,
                height,
                _texture_bytes_per_pixel(source["kind"], full),
            )
        )
    return SessionCost(tuple(items), tuple(rates))


# ---------------------------------------------------------------------------
# Checks


def format_bytes(count: float) -> str:
    """``1.5 GiB``, ``236 MiB``, ``12 KiB``: binary units, as the settings take them."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(count) >= size:
            value = count / size
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
    return f"{int(count)} bytes"


def _blame(cost: SessionCost, previous: SessionCost | None) -> CostItem | None:
    """The field that pushes the cost over: the one that grew most since ``previous``, else the costliest.

    The items a field decides (a source's own frames and its textures) are summed into one; they share
    the field's size, so what would fit scales with it.
    """
    if not cost.by_pointer:
        return None
    worst = max(cost.by_pointer, key=lambda key: cost.by_pointer[key])
    if previous is not None:
        growth = {key: value - previous.by_pointer.get(key, 0) for key, value in cost.by_pointer.items()}
        grown = max(growth, key=lambda key: growth[key])
        if growth[grown] > 0:
            worst = grown
    parts = [item for item in cost.items if item.pointer == worst]
    first = max(parts, key=lambda item: item.pixels)
    return CostItem(
        worst,
        "; ".join(item.what for item in parts),
        first.width,
        first.height,
        sum(item.bytes for item in parts) / first.pixels,
        fixed=all(item.fixed for item in parts),
    )


def _what_fits(item: CostItem, room: int, budget: int) -> str:
    if item.fixed:
        return "its cost is fixed: remove the node or reduce the rest"
    size = item.fitting(room)
    if size is None:
        return f"even without it, {format_bytes(budget - room)} is more than the budget: reduce the rest first"
    return f"{size[0]}x{size[1]} would fit"


def _relocate(path: str, base: str, params_paths: Mapping[str, str], request_path: str | None = None) -> str:
    """A pointer into the pipeline as the request names it: a node's params where the request holds them;
    a field the request does not hold at ``request_path`` when given (the message says which field it is)."""
    parts = pointer.split(path)
    if len(parts) >= 3 and parts[0] == "nodes" and parts[2] == "params" and parts[1] in params_paths:
        rest = path[len(pointer.join("/nodes", parts[1], "params")) :]
        return params_paths[parts[1]] + rest
    return request_path if request_path is not None else base + path


def _refuse(path: str, message: str) -> RemoteProtocolError:
    return RemoteProtocolError(ErrorCode.RESOURCE_LIMIT, f"{path or '/'}: {message}", path)


def check_session(
    pipeline: Mapping[str, Any],
    *,
    limits: BudgetLimits,
    other_sessions_bytes: int = 0,
    other_sessions_pixels_per_second: int = 0,
    previous: SessionCost | None = None,
    base: str = "",
    params_paths: Mapping[str, str] | None = None,
    request_path: str | None = None,
    media_sizes: Mapping[str, tuple[int, int]] | None = None,
) -> SessionCost:
    """The session's cost, or ``resource_limit`` when it would pass a budget.

    Call it with the pipeline a change would leave (``createsession``,
    ``addnode``, a tune, ``applybatch``, ``connect``), the other sessions'
    totals (``other_sessions_bytes`` / ``_pixels_per_second``: the sum of
    their :class:`SessionCost`) and, for a change to a running session, its
    cost before the change (``previous``), so the error names the field the
    change grew. Error paths are pointers into the pipeline under ``base``;
    ``params_paths`` maps a node id to where the request holds that node's
    params (``{"comp": "/payload/message/PatchParams"}`` for a tune), and
    ``request_path`` is where a blamed field the request does not hold is
    reported (the request's own change: ``/payload`` of a ``connect``); without
    it such a field is reported at ``base`` + its pipeline pointer. The
    checks: the session's bytes, the daemon's bytes, the daemon's pixels
    per second, in that order.
    """
    cost = session_cost(pipeline, media_sizes=media_sizes)
    paths = params_paths or {}
    checks = (
        (cost.bytes, limits.max_session_bytes, "this session", "max_session_bytes"),
        (other_sessions_bytes + cost.bytes, limits.max_total_bytes, "the daemon (all sessions)", "max_total_bytes"),
    )
    for total, budget, whose, setting in checks:
        if total <= budget:
            continue
        item = _blame(cost, previous)
        room = budget - (total - (item.bytes if item else 0))
        path = _relocate(item.pointer, base, paths, request_path) if item else (request_path or base)
        largest = (
            f"; the part this field decides: {item.what}, {format_bytes(item.bytes)}; {_what_fits(item, room, budget)}"
            if item
            else ""
        )
        raise _refuse(
            path,
            f"{whose} would use {format_bytes(total)} of memory, over the budget of {format_bytes(budget)} ({setting}){largest}",
        )
    rate_total = other_sessions_pixels_per_second + cost.pixels_per_second
    if rate_total > limits.max_total_pixels_per_second and cost.rates:
        rate = _blame_rate(cost, previous)
        room = limits.max_total_pixels_per_second - (rate_total - rate.pixels_per_second)
        fits = room // (rate.width * rate.height) if room > 0 else 0
        advice = f"at most {fits} fps at {rate.width}x{rate.height} fits" if fits >= 1 else "no frame rate fits at this size"
        raise _refuse(
            _relocate(rate.pointer, base, paths, request_path),
            f"the daemon would draw {rate_total:,} pixels a second, over the budget of"
            f" {limits.max_total_pixels_per_second:,} (max_total_pixels_per_second); compositor {rate.node_id!r}"
            f" draws {rate.width}x{rate.height} at {rate.fps} fps = {rate.pixels_per_second:,}; {advice}",
        )
    return cost


def _blame_rate(cost: SessionCost, previous: SessionCost | None) -> RateItem:
    before = {rate.node_id: rate.pixels_per_second for rate in previous.rates} if previous is not None else {}
    return max(cost.rates, key=lambda rate: (rate.pixels_per_second - before.get(rate.node_id, 0), rate.pixels_per_second))


def check_session_count(running: int, *, limits: BudgetLimits, path: str = "") -> None:
    """``resource_limit`` when one more session would pass ``max_sessions`` (``running``: sessions now)."""
    if running >= limits.max_sessions:
        raise _refuse(path, f"the daemon runs {running} sessions, its maximum (max_sessions); destroy one first")
