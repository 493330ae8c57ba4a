"""Pure geometry shared by the daemon's scene resolution and the client's predictions.

Coordinates are canvas pixels, origin at the top-left, y down. Rects are
floats: an aspect-fit rect is rarely a whole number of pixels, and rounding
here would make the client's prediction and the daemon's result drift apart.

Rules (ARCHITECTURE.md, "Compositor parameters"):

- Aspect fit: the source keeps its aspect ratio and is centred in the box,
  touching two opposite sides (letterbox: bars top and bottom; pillarbox:
  bars left and right).
- Auto-PiP: an input with no layer entry (or a layer entry with no rect)
  gets the rect of its slot: slot 0 fills the canvas; slot k > 0 is a box of
  1/3 of the canvas width and height whose bottom-right corner sits
  ``PIP_MARGIN`` pixels from the canvas's bottom-right corner. The source is
  aspect-fit into that box.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

PIP_MARGIN = 20.0
PIP_SCALE = 1.0 / 3.0

_PIN_NAME = re.compile(r"in_(0|[1-9][0-9]*)")


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    width: float
    height: float

    @property
    def center(self) -> tuple[float, float]:
        return (self.x + self.width / 2.0, self.y + self.height / 2.0)

    @property
    def right(self) -> float:
        return self.x + self.width

    @property
    def bottom(self) -> float:
        return self.y + self.height

    @classmethod
    def from_mapping(cls, rect: Mapping[str, float]) -> Rect:
        return cls(float(rect["x"]), float(rect["y"]), float(rect["width"]), float(rect["height"]))

    def to_dict(self, ndigits: int = 3) -> dict[str, float]:
        """Rounded so that equal layouts compare equal after float noise."""
        return {
            "x": round(self.x, ndigits) + 0.0,
            "y": round(self.y, ndigits) + 0.0,
            "width": round(self.width, ndigits) + 0.0,
            "height": round(self.height, ndigits) + 0.0,
        }


def aspect_fit(source_width: float, source_height: float, box: Rect) -> Rect:
    """The largest rect of the source's aspect ratio inside ``box``, centred.

    A source with no area (0 width or height) cannot be fit: the box itself is
    returned so a caller still gets a finite rect.
    """
    if source_width <= 0 or source_height <= 0 or box.width <= 0 or box.height <= 0:
        return box
    scale = min(box.width / source_width, box.height / source_height)
    width = source_width * scale
    height = source_height * scale
    return Rect(box.x + (box.width - width) / 2.0, box.y + (box.height - height) / 2.0, width, height)


def auto_pip_box(slot: int, canvas_width: float, canvas_height: float) -> Rect:
    """The layer rect an input gets from its slot when none is given (before aspect fit)."""
    if slot < 0:
        raise ValueError(f"slot must be >= 0, got {slot}")
    if slot == 0:
        return Rect(0.0, 0.0, float(canvas_width), float(canvas_height))
    width = canvas_width * PIP_SCALE
    height = canvas_height * PIP_SCALE
    return Rect(canvas_width - PIP_MARGIN - width, canvas_height - PIP_MARGIN - height, width, height)


def auto_pip_rect(slot: int, canvas_width: float, canvas_height: float, source_width: float, source_height: float) -> Rect:
    """Where the source of ``slot`` is drawn under the auto-PiP rule (aspect fit included)."""
    return aspect_fit(source_width, source_height, auto_pip_box(slot, canvas_width, canvas_height))


def slot_of_pin(pin: str) -> int:
    """``"in_3"`` -> 3. Compositor input pins are named ``in_0`` ... ``in_{n-1}``."""
    match = _PIN_NAME.fullmatch(pin)
    if match is None:
        raise ValueError(f"not a compositor input pin name: {pin!r} (expected in_0, in_1, ...)")
    return int(match.group(1))


def pin_of_slot(slot: int) -> str:
    if slot < 0:
        raise ValueError(f"slot must be >= 0, got {slot}")
    return f"in_{slot}"


def parse_color(text: str) -> tuple[float, float, float, float]:
    """``#RRGGBB`` or ``#RRGGBBAA`` -> straight-alpha RGBA floats in 0..1."""
    if not isinstance(text, str) or not re.fullmatch(r"#[0-9a-fA-F]{6}([0-9a-fA-F]{2})?", text):
        raise ValueError(f"colour must be '#RRGGBB' or '#RRGGBBAA', got {text!r}")
    digits = text[1:]
    if len(digits) == 6:
        digits += "ff"
    r, g, b, a = (int(digits[i : i + 2], 16) / 255.0 for i in range(0, 8, 2))
    return (r, g, b, a)
