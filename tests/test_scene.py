"""daemon/engine/render/scene.py: every resolution rule and its edges, without GL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from compositord.daemon.engine.render.scene import CropRegion, ResolvedLayer, ResolvedScene, crop_region, resolve_scene
from compositord.daemon.engine.render.text import measure_text
from compositord.protocol import params as protocol_params
from compositord.protocol.layout import Rect, auto_pip_rect


def full(params: dict) -> dict:
    """Validated compositor params with every default, as the render loop hands them over."""
    return protocol_params.with_defaults("video::compositor", protocol_params.validate("video::compositor", params))


def by_id(scene: ResolvedScene, layer_id: str) -> ResolvedLayer:
    return next(layer for layer in scene.layers if layer.id == layer_id)


CANVAS = {"width": 1280, "height": 720}


def test_inputs_without_layer_entries_get_auto_pip() -> None:
    scene = resolve_scene(full({**CANVAS, "num_inputs": 3}), {"in_0": (1920, 1080), "in_1": (640, 480), "in_2": (100, 100)})
    assert by_id(scene, "in_0").rect == Rect(0, 0, 1280, 720)
    assert by_id(scene, "in_1").rect == auto_pip_rect(1, 1280, 720, 640, 480)
    assert by_id(scene, "in_2").rect == auto_pip_rect(2, 1280, 720, 100, 100)
    assert [layer.z_index for layer in scene.layers] == [0, 1, 2]


def test_layer_entry_without_rect_keeps_auto_pip_rect_but_its_other_values() -> None:
    scene = resolve_scene(full({**CANVAS, "layers": {"in_1": {"opacity": 0.25}}}), {"in_1": (640, 360)})
    layer = by_id(scene, "in_1")
    assert layer.rect == auto_pip_rect(1, 1280, 720, 640, 360)
    assert layer.opacity == 0.25


def test_explicit_rect_is_aspect_fit_letterbox_and_pillarbox() -> None:
    params = full(
        {
            **CANVAS,
            "layers": {
                "in_0": {"rect": {"x": 0, "y": 0, "width": 400, "height": 400}},
                "in_1": {"rect": {"x": 100, "y": 100, "width": 400, "height": 100}},
            },
        }
    )
    scene = resolve_scene(params, {"in_0": (1600, 900), "in_1": (1600, 900)})
    assert by_id(scene, "in_0").rect == Rect(0, 87.5, 400, 225)  # letterbox
    pillar = by_id(scene, "in_1").rect
    assert (pillar.y, pillar.height) == (100, 100)
    assert pillar.width == pytest.approx(100 * 16 / 9)
    assert pillar.center == pytest.approx((300, 150))


def test_aspect_fit_false_stretches_to_the_rect() -> None:
    params = full({**CANVAS, "layers": {"in_0": {"rect": {"x": 10, "y": 20, "width": 300, "height": 50}, "aspect_fit": False}}})
    assert by_id(resolve_scene(params, {"in_0": (64, 64)}), "in_0").rect == Rect(10, 20, 300, 50)


def test_crop_zoom_and_pan() -> None:
    assert crop_region(1.0, 0.5, 0.5) == CropRegion(0, 0, 1, 1)
    assert crop_region(2.0, 0.5, 0.5) == CropRegion(0.25, 0.25, 0.75, 0.75)
    # Centre at 0.4 / 0.6 with a half-size window.
    panned = crop_region(2.0, 0.4, 0.6)
    assert (panned.u0, panned.v0, panned.u1, panned.v1) == pytest.approx((0.15, 0.35, 0.65, 0.85))
    # Panned past the edge: the window slides back inside the source.
    assert crop_region(4.0, 0.0, 1.0) == CropRegion(0.0, 0.75, 0.25, 1.0)
    # Zoom below 1 cannot show more than the source.
    assert crop_region(0.5, 0.5, 0.5) == CropRegion(0, 0, 1, 1)


def test_crop_keeps_the_source_aspect_for_the_fit() -> None:
    params = full(
        {**CANVAS, "layers": {"in_0": {"rect": {"x": 0, "y": 0, "width": 400, "height": 400}, "crop_zoom": 4, "crop_x": 0.9}}}
    )
    layer = by_id(resolve_scene(params, {"in_0": (1600, 900)}), "in_0")
    assert layer.rect == Rect(0, 87.5, 400, 225)
    # A quarter-wide window centred at 0.9 would end at 1.025: it slides back to end at 1.
    assert (layer.crop.u0, layer.crop.u1) == pytest.approx((0.75, 1.0))


def test_circle_rotation_mirror_opacity_are_carried() -> None:
    params = full(
        {
            **CANVAS,
            "layers": {
                "in_0": {
                    "crop_shape": "circle",
                    "rotation_degrees": -30,
                    "mirror_horizontal": True,
                    "mirror_vertical": True,
                    "opacity": 0.4,
                }
            },
        }
    )
    layer = by_id(resolve_scene(params, {"in_0": (1280, 720)}), "in_0")
    assert layer.circle and layer.mirror_horizontal and layer.mirror_vertical
    assert layer.rotation_degrees == -30 and layer.opacity == 0.4


def test_invisible_layers_and_unconnected_entries_are_omitted() -> None:
    params = full({**CANVAS, "num_inputs": 3, "layers": {"in_1": {"visible": False}, "in_2": {"opacity": 0.5}}})
    scene = resolve_scene(params, {"in_0": (64, 64), "in_1": (64, 64)})
    assert [layer.id for layer in scene.layers] == ["in_0"]
    assert [entry["id"] for entry in scene.layout()["layers"]] == ["in_0"]


def test_opacity_zero_stays_in_the_layout() -> None:
    # Layout is geometry only: a slider dragged to 0 must not make the layer vanish from view data.
    scene = resolve_scene(full({**CANVAS, "layers": {"in_0": {"opacity": 0.0}}}), {"in_0": (64, 64)})
    assert [entry["id"] for entry in scene.layout()["layers"]] == ["in_0"]


def test_draw_order_z_then_kind_then_slot() -> None:
    params = full(
        {
            **CANVAS,
            "num_inputs": 3,
            "layers": {"in_0": {"z_index": 5}, "in_1": {"z_index": 5}, "in_2": {"z_index": -1}},
            "text_overlays": [{"id": "t0", "text": "a", "z_index": 5}, {"id": "t1", "text": "b", "z_index": 0}],
            "image_overlays": [
                {"id": "i0", "asset_path": "x.png", "z_index": 5, "rect": {"x": 0, "y": 0, "width": 4, "height": 4}}
            ],
        }
    )
    scene = resolve_scene(params, {"in_1": (8, 8), "in_0": (8, 8), "in_2": (8, 8)})
    assert [layer.id for layer in scene.layers] == ["in_2", "t1", "in_0", "in_1", "i0", "t0"]


def test_overlays_default_above_video() -> None:
    params = full({**CANVAS, "layers": {"in_0": {"z_index": 999}}, "text_overlays": [{"id": "t", "text": "x"}]})
    assert [layer.id for layer in resolve_scene(params, {"in_0": (8, 8)}).layers] == ["in_0", "t"]


def test_text_overlay_auto_size_is_the_measured_text() -> None:
    params = full({**CANVAS, "text_overlays": [{"id": "t", "text": "Hello", "font_size": 40, "rect": {"x": 12, "y": 34}}]})
    scene = resolve_scene(params, {})
    width, height = measure_text("Hello", 40)
    assert width > 40 and height >= 30
    assert by_id(scene, "t").rect == Rect(12, 34, width, height)
    entry = scene.layout()["text_overlays"][0]
    assert entry == {
        "id": "t",
        "x": 12.0,
        "y": 34.0,
        "width": float(width),
        "height": float(height),
        "measured_text_width": width,
        "measured_text_height": height,
    }


def test_text_overlay_with_rect_reports_measured_size_separately() -> None:
    params = full({**CANVAS, "text_overlays": [{"id": "t", "text": "Hi", "rect": {"x": 0, "y": 0, "width": 300, "height": 60}}]})
    entry = resolve_scene(params, {}).layout()["text_overlays"][0]
    assert (entry["width"], entry["height"]) == (300, 60)
    assert 0 < entry["measured_text_width"] < 300


def test_image_overlay_auto_size_reads_the_asset(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((7, 11, 4), dtype=np.uint8)).save(tmp_path / "logo.png")
    params = full({**CANVAS, "image_overlays": [{"id": "logo", "asset_path": "logo.png", "rect": {"x": 5, "y": 6}}]})
    scene = resolve_scene(params, {}, asset_dir=tmp_path)
    assert scene.layout()["image_overlays"] == [{"id": "logo", "x": 5.0, "y": 6.0, "width": 11.0, "height": 7.0}]


def test_missing_image_asset_is_reported_not_raised(tmp_path: Path) -> None:
    params = full(
        {**CANVAS, "image_overlays": [{"id": "gone", "asset_path": "nope.png"}], "text_overlays": [{"id": "t", "text": "x"}]}
    )
    scene = resolve_scene(params, {}, asset_dir=tmp_path)
    assert [layer.id for layer in scene.layers] == ["t"]
    assert scene.errors[0][0] == "gone" and "no such file" in scene.errors[0][1]


def test_layout_shape_lists_layers_in_slot_order_with_source_sizes() -> None:
    params = full({**CANVAS, "num_inputs": 2, "layers": {"in_0": {"z_index": 9}}})
    layout = resolve_scene(params, {"in_1": (640, 480), "in_0": (1920, 1080)}).layout()
    assert set(layout) == {"canvas_width", "canvas_height", "layers", "text_overlays", "image_overlays"}
    assert (layout["canvas_width"], layout["canvas_height"]) == (1280, 720)
    assert [entry["id"] for entry in layout["layers"]] == ["in_0", "in_1"]
    assert layout["layers"][1]["source_width"] == 640 and layout["layers"][1]["source_height"] == 480
    assert set(layout["layers"][0]) == {"id", "x", "y", "width", "height", "source_width", "source_height"}


def test_layout_is_unchanged_by_non_geometry_params() -> None:
    inputs = {"in_0": (64, 64), "in_1": (32, 16)}
    base = resolve_scene(full(CANVAS), inputs).layout()
    tuned = resolve_scene(
        full({**CANVAS, "layers": {"in_1": {"opacity": 0.3, "rotation_degrees": 45, "mirror_vertical": True}}}), inputs
    ).layout()
    assert base == tuned


def test_source_size_may_be_given_by_an_object_with_width_and_height() -> None:
    class Frame:
        width = 320
        height = 240

    scene = resolve_scene(full(CANVAS), {"in_0": Frame()})
    assert (scene.layers[0].source_width, scene.layers[0].source_height) == (320, 240)


def test_background_output_format_and_matrix() -> None:
    scene = resolve_scene(full({**CANVAS, "background": "#FF000080", "output_format": "nv12", "color_matrix": "bt601"}), {})
    assert scene.background == pytest.approx((1.0, 0.0, 0.0, 128 / 255))
    assert (scene.output_format, scene.color_matrix) == ("nv12", "bt601")


def test_bad_pin_name_is_refused() -> None:
    with pytest.raises(ValueError, match="pin"):
        resolve_scene(full(CANVAS), {"video": (8, 8)})


def test_overlay_mirrors_are_carried(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((4, 6, 4), dtype=np.uint8)).save(tmp_path / "logo.png")
    params = full(
        {
            **CANVAS,
            "text_overlays": [{"id": "t", "text": "hi", "mirror_horizontal": True}],
            "image_overlays": [{"id": "i", "asset_path": "logo.png", "mirror_vertical": True}],
        }
    )
    scene = resolve_scene(params, {}, asset_dir=tmp_path)
    text, image = by_id(scene, "t"), by_id(scene, "i")
    assert (text.mirror_horizontal, text.mirror_vertical) == (True, False)
    assert (image.mirror_horizontal, image.mirror_vertical) == (False, True)
