"""protocol/layout.py: aspect fit, auto-PiP, pin names, colours (pure geometry)."""

from __future__ import annotations

import ast
import pathlib

import pytest

from compositord.protocol import layout
from compositord.protocol.layout import PIP_MARGIN, Rect, aspect_fit, auto_pip_box, auto_pip_rect


def test_aspect_fit_letterbox_is_centred_and_touches_left_and_right() -> None:
    # 16:9 source into a 4:3 box: full width, bars top and bottom.
    fitted = aspect_fit(1920, 1080, Rect(0, 0, 800, 600))
    assert fitted == Rect(0, 75, 800, 450)


def test_aspect_fit_pillarbox_is_centred_and_touches_top_and_bottom() -> None:
    fitted = aspect_fit(1080, 1920, Rect(10, 20, 1280, 720))
    assert fitted.height == 720 and fitted.y == 20
    assert fitted.width == pytest.approx(405.0)
    assert fitted.x == pytest.approx(10 + (1280 - 405) / 2)


def test_aspect_fit_same_aspect_fills_the_box() -> None:
    assert aspect_fit(640, 360, Rect(5, 6, 1280, 720)) == Rect(5, 6, 1280, 720)


def test_aspect_fit_of_an_empty_source_returns_the_box() -> None:
    box = Rect(1, 2, 30, 40)
    assert aspect_fit(0, 100, box) == box
    assert aspect_fit(100, 0, box) == box


def test_auto_pip_slot_zero_fills_the_canvas() -> None:
    assert auto_pip_box(0, 1280, 720) == Rect(0, 0, 1280, 720)
    assert auto_pip_rect(0, 1280, 720, 1280, 720) == Rect(0, 0, 1280, 720)


def test_auto_pip_slot_k_is_a_third_20px_from_bottom_right() -> None:
    box = auto_pip_box(2, 1200, 900)
    assert (box.width, box.height) == (400, 300)
    assert box.right == 1200 - PIP_MARGIN
    assert box.bottom == 900 - PIP_MARGIN


def test_auto_pip_rect_aspect_fits_inside_its_box() -> None:
    box = auto_pip_box(1, 1280, 720)
    square = auto_pip_rect(1, 1280, 720, 100, 100)
    assert square.width == square.height == pytest.approx(box.height)
    assert square.center == pytest.approx(box.center)
    assert square.x >= box.x and square.right <= box.right + 1e-9


def test_auto_pip_refuses_negative_slot() -> None:
    with pytest.raises(ValueError, match="slot"):
        auto_pip_box(-1, 100, 100)


def test_pin_names_round_trip_and_bad_names_are_refused() -> None:
    assert layout.slot_of_pin("in_0") == 0
    assert layout.slot_of_pin("in_12") == 12
    assert layout.pin_of_slot(3) == "in_3"
    for bad in ("in_", "in_01", "out", "in_-1", "IN_1"):
        with pytest.raises(ValueError, match="pin"):
            layout.slot_of_pin(bad)


def test_parse_color() -> None:
    assert layout.parse_color("#FF000080") == pytest.approx((1.0, 0.0, 0.0, 128 / 255))
    assert layout.parse_color("#00ff00") == (0.0, 1.0, 0.0, 1.0)
    for bad in ("red", "#12345", "#1234567", 7):
        with pytest.raises(ValueError, match="colour"):
            layout.parse_color(bad)  # type: ignore[arg-type]  # a wrong type on purpose: the check under test


def test_rect_to_dict_rounds_float_noise() -> None:
    assert Rect(0.1 + 0.2, 1 / 3, 2.0, -0.0).to_dict() == {"x": 0.3, "y": 0.333, "width": 2.0, "height": 0.0}


def test_layout_imports_neither_trio_nor_moderngl() -> None:
    tree = ast.parse(pathlib.Path(layout.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not imported & {"trio", "moderngl", "numpy", "PIL"}
