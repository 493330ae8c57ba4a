"""Test patterns made once on the CPU with NumPy: SMPTE bars, a grey ramp, a solid colour.

A still pattern is computed when its params change and then returned as the
same SourceFrame (same serial) every frame, so the renderer uploads it once.
``animated`` adds a white bar that sweeps across once every
``SWEEP_SECONDS``; ``timestamp`` burns the frame time (``t``, seconds) into
the top-left corner. Either makes a new frame, with a new serial, whenever
``t`` changes.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from compositord.daemon.engine.render.frames import SourceFrame
from compositord.protocol.layout import parse_color

_serials = itertools.count(1)
SWEEP_SECONDS = 4.0
BAR_FRACTION = 1 / 40  # width of the moving bar, of the frame width

# SMPTE ECR 1-1978 colour bars at 75 %: grey, yellow, cyan, green, magenta, red, blue.
_TOP_BARS = [(191, 191, 191), (191, 191, 0), (0, 191, 191), (0, 191, 0), (191, 0, 191), (191, 0, 0), (0, 0, 191)]
_MIDDLE_BARS = [(0, 0, 191), (19, 19, 19), (191, 0, 191), (19, 19, 19), (0, 191, 191), (19, 19, 19), (191, 191, 191)]
# Bottom row: -I, white, +Q, black, then the PLUGE (super-black, black, lighter black) and black.
_BOTTOM = [(0, 33, 76), (255, 255, 255), (50, 0, 106), (19, 19, 19), (9, 9, 9), (19, 19, 19), (29, 29, 29), (19, 19, 19)]
_BOTTOM_WIDTHS = [5 / 28, 5 / 28, 5 / 28, 5 / 28, 1 / 21, 1 / 21, 1 / 21, 1 / 7]


def _columns(width: int, fractions: list[float]) -> list[tuple[int, int]]:
    edges = np.rint(np.cumsum([0.0, *fractions]) * width).astype(int)
    edges[-1] = width
    return [(int(edges[i]), int(edges[i + 1])) for i in range(len(fractions))]


def smpte_bars(width: int, height: int) -> np.ndarray:
    """(h, w, 4) uint8 opaque RGBA of SMPTE colour bars."""
    image = np.empty((height, width, 4), dtype=np.uint8)
    image[..., 3] = 255
    top_end = round(height * 2 / 3)
    middle_end = round(height * 3 / 4)
    for (start, stop), color in zip(_columns(width, [1 / 7] * 7), _TOP_BARS, strict=True):
        image[:top_end, start:stop, :3] = color
    for (start, stop), color in zip(_columns(width, [1 / 7] * 7), _MIDDLE_BARS, strict=True):
        image[top_end:middle_end, start:stop, :3] = color
    for (start, stop), color in zip(_columns(width, _BOTTOM_WIDTHS), _BOTTOM, strict=True):
        image[middle_end:, start:stop, :3] = color
    return image


def ramp(width: int, height: int) -> np.ndarray:
    """A horizontal grey ramp from black to white (scaling and banding checks)."""
    values = np.rint(np.linspace(0.0, 255.0, width)).astype(np.uint8)
    image = np.empty((height, width, 4), dtype=np.uint8)
    image[..., :3] = values[np.newaxis, :, np.newaxis]
    image[..., 3] = 255
    return image


def solid(width: int, height: int, color: str) -> np.ndarray:
    r, g, b, a = parse_color(color)
    image = np.empty((height, width, 4), dtype=np.uint8)
    image[...] = np.rint(np.array([r, g, b, a]) * 255.0).astype(np.uint8)
    return image


PATTERNS: dict[str, Callable[..., np.ndarray]] = {"smpte": smpte_bars, "ramp": ramp, "solid": solid}


class ColorbarsSource:
    """A ``video::colorbars`` node: ``frame(t)`` gives the current SourceFrame."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        self._frame: SourceFrame | None = None
        self._params: dict[str, Any] = {}
        self.configure(params)

    def configure(self, params: Mapping[str, Any]) -> None:
        """New params: the pattern is made again only if something that shapes it changed."""
        params = dict(params)
        if params == self._params and self._frame is not None:
            return
        width = int(params.get("width", 1280))
        height = int(params.get("height", 720))
        pattern = str(params.get("pattern", "smpte"))
        if pattern not in PATTERNS:
            raise ValueError(f"pattern: {pattern!r} is not one of {', '.join(PATTERNS)}")
        if pattern == "solid":
            pixels = solid(width, height, str(params.get("color", "#808080")))
        else:
            pixels = PATTERNS[pattern](width, height)
        self._params = params
        self._animated = bool(params.get("animated", False))
        self._timestamp = bool(params.get("timestamp", False))
        self._pixels = pixels
        self._frame = SourceFrame("rgba8", width, height, pixels, next(_serials), opaque=bool((pixels[..., 3] == 255).all()))
        self._frame_time: float | None = None

    def frame(self, t: float = 0.0) -> SourceFrame:
        assert self._frame is not None
        if not (self._animated or self._timestamp) or t == self._frame_time:
            return self._frame
        pixels = self._pixels.copy()
        height, width = pixels.shape[:2]
        if self._animated:
            bar = max(1, round(width * BAR_FRACTION))
            start = round((t % SWEEP_SECONDS) / SWEEP_SECONDS * (width - bar))
            pixels[:, start : start + bar] = 255
        if self._timestamp:
            _burn_in(pixels, _format_time(t))
        self._frame = SourceFrame("rgba8", width, height, pixels, next(_serials), opaque=self._frame.opaque)
        self._frame_time = t
        return self._frame


def _format_time(t: float) -> str:
    millis = round(max(t, 0.0) * 1000)
    seconds, millis = divmod(millis, 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}"


def _burn_in(pixels: np.ndarray, text: str) -> None:
    """White text on a black box at the top-left, sized to the frame height."""
    from PIL import Image, ImageDraw, ImageFont

    height, width = pixels.shape[:2]
    font = ImageFont.load_default(size=max(8, height // 18))
    _left, _top, right, bottom = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=font)
    pad = max(2, height // 90)
    box_w = min(width, int(right) + 2 * pad)
    box_h = min(height, int(bottom) + 2 * pad)
    mask = Image.new("L", (box_w, box_h), 0)
    ImageDraw.Draw(mask).text((pad, pad), text, fill=255, font=font)
    region = pixels[:box_h, :box_w]
    region[..., :3] = np.asarray(mask, dtype=np.uint8)[..., None]
    region[..., 3] = 255
