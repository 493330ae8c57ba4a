"""Scenes, transitions and animated edits of a compositor: names, rules and the arithmetic, sans-IO.

A compositor's params may hold named ``scenes``, each a complete layout
(``layers``, ``text_overlays``, ``image_overlays``); ``program_scene`` names
the one on the output pin ``out`` and ``preview_scene`` the one on the pin
``preview``. Params without scenes are one implicit scene: the top-level
layout, exactly as before scenes existed. :func:`scene_params` turns
full params (``params.with_defaults``) and a scene name into the flat params
scene resolution takes.

A change of ``program_scene`` runs the params' ``transition`` (the default
for the next change): ``cut``, ``fade``, ``slide``, ``push`` or ``wipe``, over
``duration_ms`` with an ``easing``. Progress counts output frames, never
wall-clock time (:func:`frame_count`), so a recording is the same frame for
frame on every run; :func:`mix_geometry` says what the mix pass draws at a
given eased progress, in whole pixels for the moving kinds.

An animated edit (``_animate`` in a tune's message, PROTOCOL.md section 3)
moves the numeric values it changes (:func:`animatable`) over its own
``duration_ms`` with its own easing; :func:`parse_animate` checks the spec.

The easings are the quadratic family: ``ease_in`` t², ``ease_out``
1 - (1 - t)², ``ease_in_out`` 2t² below one half, 1 - 2(1 - t)² above.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from compositord.protocol import pointer
from compositord.protocol.errors import ErrorCode, FieldError, RemoteProtocolError

SCENE_NAME_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}"
MAX_SCENES = 32
# What a scene holds: the compositor's layout, the rest (canvas, format, background) is the node's.
SCENE_LAYOUT_KEYS = ("layers", "text_overlays", "image_overlays")

TRANSITION_KINDS = ("cut", "fade", "slide", "push", "wipe")
DIRECTIONS = ("left", "right", "up", "down")
EASINGS = ("linear", "ease_in", "ease_out", "ease_in_out")
MAX_DURATION_MS = 60_000

ANIMATE_KEY = "_animate"
# A tune's transition for the change of program_scene it makes, this once (the params keep their own).
TRANSITION_ONCE_KEY = "_transition"
# The last segment of a pointer whose number may move over an animation (a layer's or an overlay's).
ANIMATABLE_FIELDS = frozenset({"opacity", "rotation_degrees", "crop_zoom", "crop_x", "crop_y"})
ANIMATABLE_RECT_FIELDS = frozenset({"x", "y", "width", "height"})


def ease(easing: str, t: float) -> float:
    """The eased progress of ``t`` in [0, 1] (clamped)."""
    t = min(1.0, max(0.0, t))
    if easing == "linear":
        return t
    if easing == "ease_in":
        return t * t
    if easing == "ease_out":
        return 1.0 - (1.0 - t) * (1.0 - t)
    if easing == "ease_in_out":
        return 2.0 * t * t if t < 0.5 else 1.0 - 2.0 * (1.0 - t) * (1.0 - t)
    raise ValueError(f"unknown easing {easing!r}; known: {', '.join(EASINGS)}")


def frame_count(duration_ms: float, fps: float) -> int:
    """How many output frames a transition or animation of ``duration_ms`` takes at ``fps`` (at least 1).

    Frame k (1..n) shows progress k/n, so the last one shows the end state:
    n = 1 is a jump in the first frame.
    """
    return max(1, round(duration_ms * fps / 1000.0))


def scene_params(full: Mapping[str, Any], scene: str | None) -> dict[str, Any]:
    """Flat compositor params of ``scene`` (``None``: the implicit scene, the top-level layout).

    ``full`` has every default in place (``params.with_defaults``); the
    result is ``full`` with the scene's layout keys laid over the top-level
    ones, the form scene resolution takes. An unknown name is a ``KeyError``.
    """
    if scene is None:
        return dict(full)
    layout = full["scenes"][scene]
    return {**full, **{key: layout[key] for key in SCENE_LAYOUT_KEYS}}


@dataclass(frozen=True)
class TransitionSpec:
    """How the next change of ``program_scene`` is shown (the params' ``transition``, defaults filled in)."""

    kind: str = "cut"
    duration_ms: int = 500
    easing: str = "linear"
    direction: str = "left"

    @classmethod
    def from_params(cls, value: Mapping[str, Any] | None) -> TransitionSpec:
        value = value or {}
        default = cls()
        return cls(
            kind=str(value.get("kind") or default.kind),
            duration_ms=int(value.get("duration_ms", default.duration_ms)),
            easing=str(value.get("easing") or default.easing),
            direction=str(value.get("direction") or default.direction),
        )


@dataclass(frozen=True)
class MixGeometry:
    """What the mix pass draws at one eased progress, in whole canvas pixels (origin top-left, y down).

    ``fade``: every pixel is (1 - ``weight``) * from + ``weight`` * to.
    ``move`` (slide, push, wipe): a pixel p inside ``to_region`` (x0, y0, x1, y1; x1 and y1 excluded)
    is the incoming scene's pixel p - ``to_offset``, any other the outgoing scene's p - ``from_offset``.
    """

    kind: str  # "fade" or "move"
    weight: float = 0.0
    from_offset: tuple[int, int] = (0, 0)
    to_offset: tuple[int, int] = (0, 0)
    to_region: tuple[int, int, int, int] = (0, 0, 0, 0)


# A unit step per direction of motion, canvas axes (y down).
_MOTION = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}


def mix_geometry(spec: TransitionSpec, eased: float, width: int, height: int) -> MixGeometry:
    """The mix of ``spec`` at eased progress ``eased`` (0: all outgoing, 1: all incoming) on a ``width`` x ``height`` canvas.

    ``direction`` is where things move: ``slide left`` brings the incoming
    scene in from the right edge, moving left, over the outgoing one;
    ``push left`` moves both, the outgoing one out at the left; ``wipe left``
    uncovers the incoming scene from the right edge leftwards. Moving
    distances are rounded to whole pixels, so every frame is an exact copy
    of both renders' pixels.
    """
    if spec.kind == "fade":
        return MixGeometry("fade", weight=eased)
    if spec.kind not in ("slide", "push", "wipe"):
        raise ValueError(f"no mix for transition kind {spec.kind!r}")
    dx, dy = _MOTION[spec.direction]
    extent = width if dx else height
    travelled = math.floor(eased * extent + 0.5)  # pixels the edge has moved
    remaining = extent - travelled
    if spec.kind == "wipe":
        # The incoming scene shows from the edge it enters at, as far as the edge has moved.
        if dx < 0:
            region = (remaining, 0, width, height)
        elif dx > 0:
            region = (0, 0, travelled, height)
        elif dy < 0:
            region = (0, remaining, width, height)
        else:
            region = (0, 0, width, travelled)
        return MixGeometry("move", to_region=region)
    # The incoming scene starts one canvas against the motion and ends in place.
    to_offset = (-dx * remaining, -dy * remaining)
    x0, y0 = max(0, to_offset[0]), max(0, to_offset[1])
    region = (x0, y0, min(width, to_offset[0] + width), min(height, to_offset[1] + height))
    from_offset = (dx * travelled, dy * travelled) if spec.kind == "push" else (0, 0)
    return MixGeometry("move", from_offset=from_offset, to_offset=to_offset, to_region=region)


# --------------------------------------------------------------------------- animated edits


@dataclass(frozen=True)
class AnimateSpec:
    """An animated edit: the numbers a tune changes move over ``duration_ms`` with ``easing``."""

    duration_ms: int
    easing: str = "linear"

    def to_json(self) -> dict[str, Any]:
        return {"duration_ms": self.duration_ms, "easing": self.easing}


def parse_animate(value: Any, path: str) -> AnimateSpec:
    """The ``_animate`` of a tune's message; ``invalid_params`` naming the field otherwise."""
    errors: list[FieldError] = []
    if not isinstance(value, Mapping):
        errors.append(FieldError(path, "expected an object {duration_ms, easing}"))
    else:
        for key in value:
            if key not in ("duration_ms", "easing"):
                errors.append(FieldError(pointer.join(path, key), "unknown key"))
        duration = value.get("duration_ms")
        if "duration_ms" not in value:
            errors.append(FieldError(pointer.join(path, "duration_ms"), "required"))
        elif (
            isinstance(duration, bool)
            or not isinstance(duration, (int, float))
            or not math.isfinite(duration)
            or duration != int(duration)
            or not 0 <= duration <= MAX_DURATION_MS
        ):
            errors.append(FieldError(pointer.join(path, "duration_ms"), f"must be a whole number 0..{MAX_DURATION_MS}"))
        easing = value.get("easing", "linear")
        if easing not in EASINGS:
            errors.append(FieldError(pointer.join(path, "easing"), f"must be one of {', '.join(EASINGS)}"))
    if errors:
        raise RemoteProtocolError.from_field_errors(ErrorCode.INVALID_PARAMS, errors)
    assert isinstance(value, Mapping)
    return AnimateSpec(int(value["duration_ms"]), str(value.get("easing", "linear")))


def animatable(path: str) -> bool:
    """Whether the compositor params value at JSON pointer ``path`` may move over an animation:
    a layer's or an overlay's ``opacity``, ``rotation_degrees``, crop numbers and rect numbers."""
    parts = pointer.split(path)
    if len(parts) >= 2 and parts[-2] == "rect":
        return parts[-1] in ANIMATABLE_RECT_FIELDS
    return bool(parts) and parts[-1] in ANIMATABLE_FIELDS


def _all_leaves(value: Any, base: str = "") -> dict[str, Any]:
    """Every leaf of a JSON value by pointer, arrays descended into too (``pointer.leaves`` stops at them)."""
    if isinstance(value, Mapping):
        found: dict[str, Any] = {}
        for key, child in value.items():
            found.update(_all_leaves(child, pointer.join(base, key)))
        return found
    if isinstance(value, list):
        found = {}
        for index, child in enumerate(value):
            found.update(_all_leaves(child, pointer.join(base, index)))
        return found
    return {base: value}


def changed_leaves(before: Any, after: Any) -> set[str]:
    """Pointers of the leaves that differ between two JSON values (added, removed or changed)."""
    old, new = _all_leaves(before), _all_leaves(after)
    return {path for path in old.keys() | new.keys() if old.get(path, _ABSENT) != new.get(path, _ABSENT)}


_ABSENT = object()
