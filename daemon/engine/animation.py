"""Animated edits of one compositor: the numbers an edit changes move over output frames instead of jumping.

Pure Python (no GL), one :class:`Animator` per compositor node on the render
thread. An edit that carries ``_animate`` (``protocol.scenes.AnimateSpec``)
starts, for each value it changes that ``protocol.scenes.animatable`` names
(a layer's or an overlay's rect numbers, opacity, rotation, crop), an
animation from the value shown now to the new one: frame k of
n = ``frame_count(duration_ms, fps)`` shows start + (end - start) * eased
k/n, the last frame the end value, which is the durable one. Rules:

- The value shown now is the running animation's current value when that
  value is animating already: a newer edit starts from where it is, never
  from where the older edit began or was going.
- An edit without ``_animate`` that changes an animating value ends its
  animation: it shows the new value at once. Values an edit does not change
  keep animating.
- A value with no number before the edit (a rect that was auto, an overlay
  just added) shows the new value at once, as does an animation of one frame.
- An animation whose value is no longer a number in the params (its layer or
  overlay gone) ends.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from compositord.protocol import pointer, scenes
from compositord.protocol.scenes import AnimateSpec


@dataclass
class _Moving:
    start: float
    end: float
    frames: int
    easing: str
    frame: int = 0  # the last frame drawn

    def value(self) -> float:
        return self.start + (self.end - self.start) * scenes.ease(self.easing, self.frame / self.frames)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


class Animator:
    def __init__(self) -> None:
        self._moving: dict[str, _Moving] = {}

    @property
    def active(self) -> bool:
        return bool(self._moving)

    def paths(self) -> list[str]:
        return sorted(self._moving)

    def edited(
        self, path: str, spec: AnimateSpec | None, before: Mapping[str, Any], after: Mapping[str, Any], fps: float
    ) -> None:
        """The value at ``path`` was changed by an edit with ``spec`` (None: not animated) from the full
        params ``before`` to ``after``."""
        running = self._moving.pop(path, None)
        if spec is None or not scenes.animatable(path):
            return
        end = _number(pointer.resolve(after, path, None))
        start = running.value() if running is not None else _number(pointer.resolve(before, path, None))
        frames = scenes.frame_count(spec.duration_ms, fps)
        if start is None or end is None or start == end or frames <= 1:
            return
        self._moving[path] = _Moving(start, end, frames, spec.easing)

    def next_frame(self, full: Mapping[str, Any]) -> Mapping[str, Any]:
        """Advance every animation one frame: ``full`` with the values of this frame laid in."""
        if not self._moving:
            return full
        shown: Any = full
        for path, moving in list(self._moving.items()):
            if _number(pointer.resolve(full, path, None)) is None:
                del self._moving[path]
                continue
            moving.frame += 1
            if moving.frame >= moving.frames:
                del self._moving[path]  # the durable value from now on
                continue
            shown = pointer.with_value(shown, path, moving.value())
        return shown
