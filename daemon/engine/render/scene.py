"""Scene resolution: compositor params + current inputs -> what to draw, in order.

Pure Python over plain data (no GL): the renderer only executes what this
module decides, and every rule here is unit-tested without a GPU.

Rules, in the order they apply to one layer:

1. Rect: ``layers[pin].rect``, or the auto-PiP box of the pin's slot when the
   input has no layer entry or its entry has no rect (protocol.layout).
2. Crop: ``crop_zoom`` z >= 1 shows 1/z of the source in each direction,
   centred on (``crop_x``, ``crop_y``) (fractions of the source size, 0.5 is
   the middle); a window that would leave the source is slid back inside
   it, so panning to 0 or 1 shows the edge. The crop keeps the source's
   aspect ratio.
3. Aspect fit (``aspect_fit``, default true): the cropped source is fit into
   the rect, centred (letterbox or pillarbox). Otherwise it is stretched.
4. ``crop_shape: circle``: a circle of diameter min(width, height) of the
   fitted rect, centred in it, with an anti-aliased edge.
5. Mirror (``mirror_horizontal`` / ``mirror_vertical``) flips the content
   inside the rect; rotation (``rotation_degrees``, clockwise on screen) turns
   the mirrored rect about its centre; ``opacity`` scales it.
6. Draw order: ``z_index`` ascending; ties: video layers before image
   overlays before text overlays; then by slot (video) or list position
   (overlays). Invisible layers and overlays are omitted (from drawing and
   from the view-data layout).

Overlays are drawn into their rect as is (no aspect fit). A rect's
``width`` / ``height`` left out (``None``) is the content's own size: the
measured text, or the image's pixel size. An overlay that cannot be resolved
(missing asset, bad font) is left out and reported in ``ResolvedScene.errors``
as ``(id, message)``: one bad overlay never stops the frame.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from compositord.daemon.engine.render.images import AssetError, image_size
from compositord.daemon.engine.render.text import TextStyle, font_path_for, measure_text
from compositord.protocol.layout import Rect, aspect_fit, auto_pip_box, parse_color, slot_of_pin

LayerKind = Literal["video", "image", "text"]
_KIND_RANK: dict[str, int] = {"video": 0, "image": 1, "text": 2}

DEFAULT_CANVAS = (1280, 720)
DEFAULT_BACKGROUND = "#000000FF"
DEFAULT_FONT_SIZE = 32
DEFAULT_OVERLAY_Z = 1000  # overlays above video unless told otherwise
DEFAULT_TEXT_COLOR = "#ffffffff"


class HasSize(Protocol):
    """Anything with a size, such as a :class:`SourceFrame`; read-only members, so frozen dataclasses match."""

    @property
    def width(self) -> int: ...

    @property
    def height(self) -> int: ...


SourceSize = tuple[int, int] | HasSize


@dataclass(frozen=True)
class CropRegion:
    """The part of the source shown, in source UV (0..1, v down), before mirroring."""

    u0: float = 0.0
    v0: float = 0.0
    u1: float = 1.0
    v1: float = 1.0


@dataclass(frozen=True)
class ResolvedLayer:
    kind: LayerKind
    id: str
    order: int  # slot for video, list position for overlays
    z_index: int
    rect: Rect  # destination after aspect fit, before rotation, canvas pixels
    crop: CropRegion
    circle: bool
    rotation_degrees: float
    mirror_horizontal: bool
    mirror_vertical: bool
    opacity: float
    source_width: int
    source_height: int
    asset_path: str | None = None
    text_style: TextStyle | None = None
    measured_text: tuple[int, int] | None = None

    @property
    def sort_key(self) -> tuple[int, int, int]:
        return (self.z_index, _KIND_RANK[self.kind], self.order)

    def covers_canvas_unscaled(self, frame_size: tuple[int, int], canvas: tuple[int, int]) -> bool:
        """A canvas-sized frame drawn whole and 1:1 over the whole canvas at full opacity.

        The geometric half of "its pixels *are* the bottom": the renderer and the
        plane pass each add what they need of the frame's pixel format.
        """
        rect = self.rect
        crop = self.crop
        return (
            frame_size == canvas
            and self.opacity >= 1.0
            and not self.circle
            and not self.mirror_horizontal
            and not self.mirror_vertical
            and math.isclose(self.rotation_degrees % 360.0, 0.0, abs_tol=1e-9)
            and (crop.u0, crop.v0, crop.u1, crop.v1) == (0.0, 0.0, 1.0, 1.0)
            and all(
                math.isclose(a, b, abs_tol=1e-6)
                for a, b in zip((rect.x, rect.y, rect.width, rect.height), (0, 0, *canvas), strict=False)
            )
        )


@dataclass(frozen=True)
class ResolvedScene:
    width: int
    height: int
    background: tuple[float, float, float, float]  # straight alpha, 0..1
    output_format: str
    color_matrix: str = "bt709"  # of NV12 / I420 output
    layers: tuple[ResolvedLayer, ...] = field(default=())  # draw order, bottom first
    errors: tuple[tuple[str, str], ...] = field(default=())  # (overlay id, why it is left out)

    def layout(self) -> dict[str, Any]:
        """The compositor's view data (PROTOCOL.md section 4): geometry only."""
        videos = sorted((layer for layer in self.layers if layer.kind == "video"), key=lambda layer: layer.order)
        texts = sorted((layer for layer in self.layers if layer.kind == "text"), key=lambda layer: layer.order)
        images = sorted((layer for layer in self.layers if layer.kind == "image"), key=lambda layer: layer.order)
        return {
            "canvas_width": self.width,
            "canvas_height": self.height,
            "layers": [
                {"id": layer.id, **layer.rect.to_dict(), "source_width": layer.source_width, "source_height": layer.source_height}
                for layer in videos
            ],
            "text_overlays": [
                {
                    "id": layer.id,
                    **layer.rect.to_dict(),
                    "measured_text_width": layer.measured_text[0] if layer.measured_text else 0,
                    "measured_text_height": layer.measured_text[1] if layer.measured_text else 0,
                }
                for layer in texts
            ],
            "image_overlays": [{"id": layer.id, **layer.rect.to_dict()} for layer in images],
        }


def _source_size(value: SourceSize) -> tuple[int, int]:
    if isinstance(value, tuple):
        return (int(value[0]), int(value[1]))
    return (int(value.width), int(value.height))


def crop_region(crop_zoom: float, crop_x: float, crop_y: float) -> CropRegion:
    """The window of 1/zoom of the source centred on (crop_x, crop_y), slid back inside the source."""
    zoom = max(1.0, float(crop_zoom))
    size = 1.0 / zoom
    u0 = min(max(float(crop_x) - size / 2.0, 0.0), 1.0 - size)
    v0 = min(max(float(crop_y) - size / 2.0, 0.0), 1.0 - size)
    return CropRegion(u0, v0, u0 + size, v0 + size)


def _video_layer(
    pin: str, size: tuple[int, int], entry: Mapping[str, Any] | None, canvas: tuple[int, int]
) -> ResolvedLayer | None:
    slot = slot_of_pin(pin)
    entry = entry or {}
    if not entry.get("visible", True):
        return None
    source_w, source_h = size
    box = Rect.from_mapping(entry["rect"]) if entry.get("rect") else auto_pip_box(slot, *canvas)
    crop = crop_region(entry.get("crop_zoom", 1.0), entry.get("crop_x", 0.5), entry.get("crop_y", 0.5))
    cropped_w = source_w * (crop.u1 - crop.u0)
    cropped_h = source_h * (crop.v1 - crop.v0)
    rect = aspect_fit(cropped_w, cropped_h, box) if entry.get("aspect_fit", True) else box
    return ResolvedLayer(
        kind="video",
        id=pin,
        order=slot,
        z_index=int(entry.get("z_index", slot)),
        rect=rect,
        crop=crop,
        circle=entry.get("crop_shape", "rect") == "circle",
        rotation_degrees=float(entry.get("rotation_degrees", 0.0)),
        mirror_horizontal=bool(entry.get("mirror_horizontal", False)),
        mirror_vertical=bool(entry.get("mirror_vertical", False)),
        opacity=float(entry.get("opacity", 1.0)),
        source_width=source_w,
        source_height=source_h,
    )


def _overlay_common(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "z_index": int(entry.get("z_index", DEFAULT_OVERLAY_Z)),
        "crop": CropRegion(),
        "circle": False,
        "rotation_degrees": float(entry.get("rotation_degrees", 0.0)),
        "mirror_horizontal": bool(entry.get("mirror_horizontal", False)),
        "mirror_vertical": bool(entry.get("mirror_vertical", False)),
        "opacity": float(entry.get("opacity", 1.0)),
    }


def _overlay_rect(entry: Mapping[str, Any], content_size: tuple[int, int]) -> Rect:
    """The overlay's rect; a missing width or height is the content's own."""
    rect = entry.get("rect") or {}
    width = rect.get("width")
    height = rect.get("height")
    return Rect(
        float(rect.get("x") or 0.0),
        float(rect.get("y") or 0.0),
        float(width) if width is not None else float(max(1, content_size[0])),
        float(height) if height is not None else float(max(1, content_size[1])),
    )


def _text_layer(index: int, entry: Mapping[str, Any], asset_dir: str | os.PathLike[str] | None) -> ResolvedLayer:
    text = str(entry.get("text", ""))
    font_size = max(1, round(float(entry.get("font_size", DEFAULT_FONT_SIZE))))
    font_path = font_path_for(entry.get("font"), asset_dir)
    measured = measure_text(text, font_size, font_path)
    rect = _overlay_rect(entry, measured)
    style = TextStyle(
        text=text,
        color=str(entry.get("color", DEFAULT_TEXT_COLOR)),
        font_size=font_size,
        font_path=font_path,
        width=max(1, math.ceil(rect.width - 1e-6)),
        height=max(1, math.ceil(rect.height - 1e-6)),
    )
    return ResolvedLayer(
        kind="text",
        id=str(entry.get("id", f"text_{index}")),
        order=index,
        rect=rect,
        source_width=style.width,
        source_height=style.height,
        text_style=style,
        measured_text=measured,
        **_overlay_common(entry),
    )


def _image_layer(index: int, entry: Mapping[str, Any], asset_dir: str | os.PathLike[str] | None) -> ResolvedLayer:
    asset_path = str(entry.get("asset_path", ""))
    rect_entry = entry.get("rect") or {}
    if rect_entry.get("width") is not None and rect_entry.get("height") is not None:
        natural = (0, 0)  # not needed: no file access when the rect is complete
    else:
        natural = image_size(asset_dir, asset_path)
    rect = _overlay_rect(entry, natural)
    return ResolvedLayer(
        kind="image",
        id=str(entry.get("id", f"image_{index}")),
        order=index,
        rect=rect,
        source_width=natural[0],
        source_height=natural[1],
        asset_path=asset_path,
        **_overlay_common(entry),
    )


def resolve_scene(
    params: Mapping[str, Any],
    inputs: Mapping[str, SourceSize],
    *,
    asset_dir: str | os.PathLike[str] | None = None,
) -> ResolvedScene:
    """Resolve compositor ``params`` (with defaults applied) against the connected ``inputs``.

    ``inputs`` maps input pin (``in_0``...) to its current source size, either
    a ``(width, height)`` tuple or anything with ``width`` and ``height`` (a
    SourceFrame). Pins with a layer entry but no input are not drawn.
    ``asset_dir`` is where image overlays (and font files) are looked up.
    """
    canvas = (int(params.get("width", DEFAULT_CANVAS[0])), int(params.get("height", DEFAULT_CANVAS[1])))
    layer_entries: Mapping[str, Any] = params.get("layers") or {}
    resolved: list[ResolvedLayer] = []
    for pin, source in inputs.items():
        layer = _video_layer(pin, _source_size(source), layer_entries.get(pin), canvas)
        if layer is not None:
            resolved.append(layer)
    errors: list[tuple[str, str]] = []
    for key, make_layer, fallback_id in (("text_overlays", _text_layer, "text"), ("image_overlays", _image_layer, "image")):
        for index, entry in enumerate(params.get(key) or ()):
            if entry.get("visible", True):
                try:
                    resolved.append(make_layer(index, entry, asset_dir))
                except AssetError as exc:
                    errors.append((str(entry.get("id", f"{fallback_id}_{index}")), str(exc)))
    resolved.sort(key=lambda layer: layer.sort_key)
    return ResolvedScene(
        width=canvas[0],
        height=canvas[1],
        background=parse_color(str(params.get("background", DEFAULT_BACKGROUND))),
        output_format=str(params.get("output_format", "rgba8")),
        color_matrix=str(params.get("color_matrix", "bt709")),
        layers=tuple(resolved),
        errors=tuple(errors),
    )
