"""Text overlays: measured and rasterized with Pillow, no system font needed.

The font is Pillow's bundled scalable font (``ImageFont.load_default(size=)``,
Pillow >= 10.1 with FreeType) unless a ``font`` names a TTF/OTF file inside
the asset directory. Measurement is pure CPU work, so scene resolution can
report ``measured_text_width/height`` without GL.

The raster is the overlay rect's size with the text at its top-left corner,
clipped by the rect, so an unrotated overlay maps texels 1:1 to pixels.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from compositord.daemon.engine.render.images import AssetError, resolve_asset
from compositord.protocol.budget import MAX_TEXT_RASTER_SIDE  # one cap for the renderer and the budget
from compositord.protocol.layout import parse_color

DEFAULT_FONT_NAMES = (None, "", "default")
# Each pipeline has its own render thread; cached FreeType faces are shared between them,
# and a FreeType face must not be used by two threads at once.
_FREETYPE_LOCK = threading.Lock()


@dataclass(frozen=True)
class TextStyle:
    """Everything that changes the raster: the cache key."""

    text: str
    color: str
    font_size: int
    font_path: Path | None
    width: int
    height: int


def font_path_for(font: str | None, asset_dir: str | os.PathLike[str] | None) -> Path | None:
    """``None`` for the bundled font, else the checked path of a font asset."""
    if font in DEFAULT_FONT_NAMES:
        return None
    try:
        return resolve_asset(asset_dir, str(font))
    except AssetError as exc:
        raise AssetError(f"font: {exc}") from exc


@lru_cache(maxsize=32)
def _font(font_size: int, font_path: Path | None) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    if font_path is None:
        return ImageFont.load_default(size=font_size)
    try:
        return ImageFont.truetype(str(font_path), size=font_size)
    except OSError as exc:
        raise AssetError(f"font {font_path.name}: cannot load: {exc}") from exc


@lru_cache(maxsize=256)
def measure_text(text: str, font_size: int, font_path: Path | None = None) -> tuple[int, int]:
    """(width, height) in pixels of the inked text drawn at the origin (right and bottom of its bbox)."""
    if not text:
        return (0, 0)
    draw = ImageDraw.Draw(Image.new("L", (1, 1)))
    with _FREETYPE_LOCK:
        _left, _top, right, bottom = draw.multiline_textbbox((0, 0), text, font=_font(font_size, font_path))
    return (max(0, math.ceil(right)), max(0, math.ceil(bottom)))


def rasterize_text(style: TextStyle) -> np.ndarray:
    """Premultiplied RGBA (h, w, 4) uint8 of the overlay rect with the text at its top-left."""
    width = max(1, min(style.width, MAX_TEXT_RASTER_SIDE))
    height = max(1, min(style.height, MAX_TEXT_RASTER_SIDE))
    coverage = Image.new("L", (width, height), 0)
    if style.text:
        with _FREETYPE_LOCK:
            ImageDraw.Draw(coverage).multiline_text((0, 0), style.text, fill=255, font=_font(style.font_size, style.font_path))
    mask = np.asarray(coverage, dtype=np.float32) / 255.0
    r, g, b, a = parse_color(style.color)
    alpha = mask * a
    out = np.empty((height, width, 4), dtype=np.uint8)
    for channel, value in enumerate((r, g, b)):
        out[..., channel] = np.rint(alpha * value * 255.0)
    out[..., 3] = np.rint(alpha * 255.0)
    return out
