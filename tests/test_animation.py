"""Animated edits: the Animator's rules (engine/animation.py), no GL."""

from __future__ import annotations

from typing import Any

import pytest

from compositord.daemon.engine.animation import Animator
from compositord.protocol import params, scenes
from compositord.protocol.scenes import AnimateSpec

COMP = "video::compositor"
FPS = 10


def full(**layer: Any) -> dict[str, Any]:
    durable = {"layers": {"in_1": {"rect": {"x": 0, "y": 0, "width": 100, "height": 50}, **layer}}}
    return params.with_defaults(COMP, params.validate(COMP, durable))


def x_of(shown: Any) -> float:
    return float(shown["layers"]["in_1"]["rect"]["x"])


def test_an_animated_value_moves_frame_by_frame_and_ends_on_the_durable_value() -> None:
    animator = Animator()
    before, after = full(), full(rect={"x": 100, "y": 0, "width": 100, "height": 50})
    animator.edited("/layers/in_1/rect/x", AnimateSpec(500, "ease_in"), before, after, FPS)  # 5 frames
    seen = [x_of(animator.next_frame(after)) for _ in range(6)]
    assert seen == pytest.approx([100 * scenes.ease("ease_in", k / 5) for k in range(1, 6)] + [100])
    assert not animator.active
    assert after["layers"]["in_1"]["rect"]["x"] == 100, "the params themselves are never changed"


def test_a_newer_edit_starts_from_the_current_value() -> None:
    animator = Animator()
    path = "/layers/in_1/opacity"
    a, b, c = full(), full(opacity=0.0), full(opacity=0.6)
    animator.edited(path, AnimateSpec(1000), a, b, FPS)  # 1.0 -> 0.0 over 10 frames
    for _ in range(4):
        shown = animator.next_frame(b)
    assert shown["layers"]["in_1"]["opacity"] == pytest.approx(0.6)
    animator.edited(path, AnimateSpec(200), b, c, FPS)  # from 0.6 (where it is), not from 0.0, to 0.6: nothing to move
    assert not animator.active
    animator.edited(path, AnimateSpec(1000), a, b, FPS)
    shown = animator.next_frame(b)
    assert shown["layers"]["in_1"]["opacity"] == pytest.approx(0.9)
    d = full(opacity=0.5)
    animator.edited(path, AnimateSpec(400, "linear"), b, d, FPS)  # from 0.9 to 0.5 over 4 frames
    assert [animator.next_frame(d)["layers"]["in_1"]["opacity"] for _ in range(4)] == pytest.approx([0.8, 0.7, 0.6, 0.5])


def test_an_edit_without_animate_ends_only_the_values_it_changes() -> None:
    animator = Animator()
    before = full()
    after = full(opacity=0.0, rect={"x": 100, "y": 0, "width": 100, "height": 50})
    for path in ("/layers/in_1/opacity", "/layers/in_1/rect/x"):
        animator.edited(path, AnimateSpec(1000), before, after, FPS)
    animator.next_frame(after)
    animator.edited("/layers/in_1/rect/x", None, after, after, FPS)
    assert animator.paths() == ["/layers/in_1/opacity"]
    shown = animator.next_frame(after)
    assert x_of(shown) == 100 and shown["layers"]["in_1"]["opacity"] == pytest.approx(0.8)


def test_values_that_cannot_move_jump() -> None:
    animator = Animator()
    auto = params.with_defaults(COMP, {})
    placed = full()
    animator.edited("/layers/in_1/rect/x", AnimateSpec(1000), auto, placed, FPS)  # the rect was auto: no number before
    animator.edited("/layers/in_1/z_index", AnimateSpec(1000), auto, full(z_index=5), FPS)  # not animatable
    animator.edited("/layers/in_1/opacity", AnimateSpec(50), placed, full(opacity=0.5), FPS)  # one frame
    assert not animator.active
    # A value whose layer went away ends its animation.
    shown, hidden = overlays(1.0, 0.0)
    animator.edited("/text_overlays/0/opacity", AnimateSpec(1000), shown, hidden, FPS)
    assert animator.active
    assert animator.next_frame(params.with_defaults(COMP, {})) == params.with_defaults(COMP, {})
    assert not animator.active


def overlays(*opacities: float) -> list[dict[str, Any]]:
    return [params.with_defaults(COMP, {"text_overlays": [{"id": "t", "opacity": value}]}) for value in opacities]


def test_overlay_values_in_lists_move_too() -> None:
    animator = Animator()
    before, after = overlays(1.0, 0.0)
    animator.edited("/text_overlays/0/opacity", AnimateSpec(200), before, after, FPS)
    assert animator.next_frame(after)["text_overlays"][0]["opacity"] == pytest.approx(0.5)
