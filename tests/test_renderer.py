"""The GL renderer against an independent NumPy model (tests/render_reference.py).

Tolerance: every compared channel within 2/255 (2 code values in 8 bits) of
the model, away from edges: pixels within 3 px of a layer's rect edge or a
circle's edge are masked out, where rasterization rules and anti-aliasing
may legitimately differ. Each test also checks that enough pixels remain
compared to mean something.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import moderngl
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from compositord.daemon.engine.render.frames import OutputFrame, PixelFormat, SourceFrame
from compositord.daemon.engine.render.renderer import Renderer
from compositord.daemon.engine.render.scene import ResolvedScene, resolve_scene
from compositord.protocol import params as protocol_params
from compositord.tests.render_reference import (
    EDGE_BAND,
    TOLERANCE,
    RefLayer,
    assert_close,
    composite,
    gradient,
    rgb_to_ycbcr_limited,
    sample_bilinear,
    subsample_2x2,
    ycbcr_limited_to_rgb,
)

pytestmark = pytest.mark.gl

W, H = 160, 120
BACKGROUND = "#203040FF"
BACKGROUND_RGBA = (0x20 / 255, 0x30 / 255, 0x40 / 255, 1.0)


def full(params: dict) -> dict:
    return protocol_params.with_defaults("video::compositor", protocol_params.validate("video::compositor", params))


def frame(pixels: np.ndarray, serial: int = 1, **kwargs: Any) -> SourceFrame:
    height, width = pixels.shape[:2]
    opaque = bool((pixels[..., 3] == 255).all())
    return SourceFrame("rgba8", width, height, pixels, serial, opaque=opaque, **kwargs)


def render(ctx: moderngl.Context, params: dict, frames: dict[str, SourceFrame], asset_dir: Path | None = None) -> OutputFrame:
    scene = resolve_scene(full(params), frames, asset_dir=asset_dir)
    assert not scene.errors
    renderer = Renderer(ctx, scene.width, scene.height, scene.output_format, scene.color_matrix, asset_dir)
    try:
        return renderer.render(scene, frames)
    finally:
        renderer.release()


def assert_matches(output: np.ndarray, reference: np.ndarray, edges: np.ndarray) -> None:
    """The RGBA output against the model's (0..1) reference."""
    assert_close(output, reference * 255.0, edges)


def canvas(**extra: Any) -> dict:
    return {"width": W, "height": H, "background": BACKGROUND, **extra}


def rect(x: int, y: int, width: int, height: int) -> dict:
    return {"x": x, "y": y, "width": width, "height": height}


# -- layers -----------------------------------------------------------------


@pytest.mark.parametrize("top", ["in_0", "in_1"])
def test_opacity_and_overlap_order(gl_ctx: moderngl.Context, top: str) -> None:
    a, b = gradient(40, 30), gradient(32, 24, seed=3)[:, ::-1].copy()
    layers = {
        "in_0": {"rect": rect(10, 10, 80, 60), "opacity": 0.8, "z_index": 2 if top == "in_0" else 1},
        "in_1": {"rect": rect(50, 40, 96, 72), "opacity": 0.55, "z_index": 2 if top == "in_1" else 1},
    }
    output = render(gl_ctx, canvas(layers=layers), {"in_0": frame(a), "in_1": frame(b)}).as_array()
    ref_a = RefLayer(a, 10, 10, 80, 60, opacity=0.8)
    ref_b = RefLayer(b, 50, 40, 96, 72, opacity=0.55)
    order = [ref_b, ref_a] if top == "in_0" else [ref_a, ref_b]
    reference, edges = composite(W, H, BACKGROUND_RGBA, order, EDGE_BAND)
    assert_matches(output, reference, edges)
    # The overlap is where order shows: the other order must differ there.
    wrong, _ = composite(W, H, BACKGROUND_RGBA, order[::-1], EDGE_BAND)
    assert np.abs(wrong[55, 70] - reference[55, 70]).max() * 255 > 10


@pytest.mark.parametrize("degrees", [15.0, 90.0, -37.5])
def test_rotation_clockwise_about_the_rect_centre(gl_ctx: moderngl.Context, degrees: float) -> None:
    source = gradient(40, 24)
    layers = {"in_0": {"rect": rect(30, 30, 100, 60), "rotation_degrees": degrees}}
    output = render(gl_ctx, canvas(layers=layers), {"in_0": frame(source)}).as_array()
    reference, edges = composite(W, H, BACKGROUND_RGBA, [RefLayer(source, 30, 30, 100, 60, rotation_degrees=degrees)], EDGE_BAND)
    assert_matches(output, reference, edges)
    if degrees == 90.0:
        # Clockwise: the source's top edge (low green) ends up on the right of the rotated rect.
        assert output[60, 105, 1] < output[60, 55, 1]


@pytest.mark.parametrize(("horizontal", "vertical"), [(True, False), (False, True), (True, True)])
def test_mirrors(gl_ctx: moderngl.Context, horizontal: bool, vertical: bool) -> None:
    source = gradient(48, 36)
    layers = {
        "in_0": {
            "rect": rect(16, 12, 128, 96),
            "mirror_horizontal": horizontal,
            "mirror_vertical": vertical,
            "rotation_degrees": 10,
        }
    }
    output = render(gl_ctx, canvas(layers=layers), {"in_0": frame(source)}).as_array()
    ref = RefLayer(source, 16, 12, 128, 96, mirror_horizontal=horizontal, mirror_vertical=vertical, rotation_degrees=10)
    reference, edges = composite(W, H, BACKGROUND_RGBA, [ref], EDGE_BAND)
    assert_matches(output, reference, edges)
    # Red rises left to right unless mirrored horizontally.
    assert (output[60, 40, 0] > output[60, 120, 0]) == horizontal


def test_crop_zoom_and_pan(gl_ctx: moderngl.Context) -> None:
    source = gradient(64, 48)
    zoom, centre_x, centre_y = 3.0, 0.4, 0.62
    layers = {"in_0": {"rect": rect(20, 15, 120, 90), "crop_zoom": zoom, "crop_x": centre_x, "crop_y": centre_y}}
    output = render(gl_ctx, canvas(layers=layers), {"in_0": frame(source)}).as_array()
    half = 1 / (2 * zoom)
    crop = (centre_x - half, centre_y - half, centre_x + half, centre_y + half)
    reference, edges = composite(W, H, BACKGROUND_RGBA, [RefLayer(source, 20, 15, 120, 90, crop=crop)], EDGE_BAND)
    assert_matches(output, reference, edges)


def test_crop_pan_to_the_edge_shows_the_edge(gl_ctx: moderngl.Context) -> None:
    source = gradient(64, 48)
    layers = {"in_0": {"rect": rect(20, 15, 120, 90), "crop_zoom": 2.0, "crop_x": 1.0, "crop_y": 0.0}}
    output = render(gl_ctx, canvas(layers=layers), {"in_0": frame(source)}).as_array()
    reference, edges = composite(W, H, BACKGROUND_RGBA, [RefLayer(source, 20, 15, 120, 90, crop=(0.5, 0.0, 1.0, 0.5))], EDGE_BAND)
    assert_matches(output, reference, edges)


def test_circle_crop_on_a_non_square_rect(gl_ctx: moderngl.Context) -> None:
    source = gradient(50, 30)
    layers = {"in_0": {"rect": rect(20, 20, 120, 72), "crop_shape": "circle", "opacity": 0.9}}
    output = render(gl_ctx, canvas(layers=layers), {"in_0": frame(source)}).as_array()
    reference, edges = composite(W, H, BACKGROUND_RGBA, [RefLayer(source, 20, 20, 120, 72, circle=True, opacity=0.9)], EDGE_BAND)
    assert_matches(output, reference, edges)
    # A circle, not an ellipse: inside the rect but outside the 72 px circle stays background.
    assert tuple(output[56, 25, :3]) == (0x20, 0x30, 0x40)
    assert tuple(output[56, 80, :3]) != (0x20, 0x30, 0x40)


def test_straight_alpha_source_is_premultiplied(gl_ctx: moderngl.Context) -> None:
    source = gradient(40, 30, alpha=100)
    layers = {"in_0": {"rect": rect(20, 20, 120, 90), "rotation_degrees": 20}}
    output = render(gl_ctx, canvas(layers=layers), {"in_0": frame(source)}).as_array()
    reference, edges = composite(W, H, BACKGROUND_RGBA, [RefLayer(source, 20, 20, 120, 90, rotation_degrees=20)], EDGE_BAND)
    assert_matches(output, reference, edges)


def test_image_overlay_with_alpha(gl_ctx: moderngl.Context, tmp_path: Path) -> None:
    pixels = gradient(30, 20, alpha=160)
    Image.fromarray(pixels).save(tmp_path / "badge.png")
    params = canvas(
        image_overlays=[
            {"id": "badge", "asset_path": "badge.png", "rect": rect(40, 30, 90, 60), "opacity": 0.7, "rotation_degrees": 30}
        ]
    )
    output = render(gl_ctx, params, {}, asset_dir=tmp_path).as_array()
    ref = RefLayer(pixels, 40, 30, 90, 60, opacity=0.7, rotation_degrees=30)
    reference, edges = composite(W, H, BACKGROUND_RGBA, [ref], EDGE_BAND)
    assert_matches(output, reference, edges)


@pytest.mark.parametrize(("horizontal", "vertical"), [(True, False), (False, True)])
def test_image_overlay_mirrors(gl_ctx: moderngl.Context, tmp_path: Path, horizontal: bool, vertical: bool) -> None:
    pixels = gradient(30, 20)
    Image.fromarray(pixels).save(tmp_path / "badge.png")
    overlay = {"id": "badge", "asset_path": "badge.png", "rect": rect(20, 20, 120, 80)}
    params = canvas(image_overlays=[{**overlay, "mirror_horizontal": horizontal, "mirror_vertical": vertical}])
    output = render(gl_ctx, params, {}, asset_dir=tmp_path).as_array()
    ref = RefLayer(pixels, 20, 20, 120, 80, mirror_horizontal=horizontal, mirror_vertical=vertical)
    reference, edges = composite(W, H, BACKGROUND_RGBA, [ref], EDGE_BAND)
    assert_matches(output, reference, edges)
    unmirrored = render(gl_ctx, canvas(image_overlays=[overlay]), {}, asset_dir=tmp_path).as_array()
    flipped = unmirrored[20:100, 20:140][:, ::-1] if horizontal else unmirrored[20:100, 20:140][::-1]
    assert np.abs(output[20:100, 20:140].astype(int) - flipped.astype(int)).max() <= TOLERANCE


def test_text_overlay_mirrored_horizontally_is_the_text_flipped(gl_ctx: moderngl.Context) -> None:
    text = {"id": "t", "text": "Ag 42", "font_size": 24, "color": "#FFFFFFFF", "rect": rect(20, 30, 120, 40)}
    plain = render(gl_ctx, {"width": W, "height": H, "text_overlays": [text]}, {}).as_array()
    mirrored = render(gl_ctx, {"width": W, "height": H, "text_overlays": [{**text, "mirror_horizontal": True}]}, {}).as_array()
    region = (slice(30, 70), slice(20, 140))
    assert (plain[region][..., 0] > 128).sum() > 100, "the text must have ink"
    assert np.abs(mirrored[region].astype(int) - plain[region][:, ::-1].astype(int)).max() <= TOLERANCE


def test_text_is_present_and_placed(gl_ctx: moderngl.Context) -> None:
    x, y, width, height = 20, 30, 120, 40
    params = {
        "width": W,
        "height": H,
        "background": "#000000FF",
        "text_overlays": [{"id": "t", "text": "Ag 42", "font_size": 24, "color": "#FFFFFFFF", "rect": rect(x, y, width, height)}],
    }
    output = render(gl_ctx, params, {}).as_array()
    # Independent raster: Pillow's bundled font, white on black, at the rect's top-left.
    mask = Image.new("L", (width, height), 0)
    ImageDraw.Draw(mask).multiline_text((0, 0), "Ag 42", fill=255, font=ImageFont.load_default(size=24))
    expected = np.asarray(mask, dtype=np.float64)
    assert (expected > 128).sum() > 100, "the reference text must have ink"
    region = output[y : y + height, x : x + width, :3].astype(np.float64)
    assert np.abs(region - expected[..., None]).max() <= TOLERANCE
    outside = output[..., :3].copy()
    outside[y : y + height, x : x + width] = 0
    assert outside.max() == 0, "text drawn outside its rect"


# -- formats ------------------------------------------------------------------


@pytest.mark.parametrize("output_format", ["nv12", "i420"])
@pytest.mark.parametrize("matrix", ["bt601", "bt709"])
def test_yuv_output_planes_match_numpy_conversion(gl_ctx: moderngl.Context, output_format: str, matrix: str) -> None:
    source = gradient(80, 60)
    layers = {"in_0": {"rect": rect(0, 0, W, H)}}
    frames = {"in_0": frame(source)}
    rgba = render(gl_ctx, canvas(layers=layers), frames).as_array()
    yuv = render(gl_ctx, canvas(layers=layers, output_format=output_format, color_matrix=matrix), frames)
    assert yuv.pixel_format == output_format and len(yuv.data) == W * H * 3 // 2
    expected = rgb_to_ycbcr_limited(rgba[..., :3].astype(np.float64) / 255.0, matrix)
    expected_chroma = subsample_2x2(expected[..., 1:])
    assert np.abs(yuv.plane(0) - expected[..., 0]).max() <= TOLERANCE
    if output_format == "nv12":
        chroma = yuv.plane(1).astype(np.float64)
    else:
        chroma = np.stack([yuv.plane(1), yuv.plane(2)], axis=-1).astype(np.float64)
    assert chroma.shape == (H // 2, W // 2, 2)
    assert np.abs(chroma - expected_chroma).max() <= TOLERANCE
    # The matrices differ enough that using the wrong one would fail.
    other = rgb_to_ycbcr_limited(rgba[..., :3].astype(np.float64) / 255.0, "bt709" if matrix == "bt601" else "bt601")
    assert np.abs(yuv.plane(0) - other[..., 0]).max() > TOLERANCE


@pytest.mark.parametrize("pixel_format", ["nv12", "i420"])
def test_yuv_input_is_converted_to_rgba(gl_ctx: moderngl.Context, pixel_format: PixelFormat) -> None:
    width, height = 64, 48
    rgb = gradient(width, height)[..., :3].astype(np.float64) / 255.0
    ycbcr = rgb_to_ycbcr_limited(rgb, "bt601")
    luma = np.rint(ycbcr[..., 0]).astype(np.uint8)
    chroma = np.rint(subsample_2x2(ycbcr[..., 1:])).astype(np.uint8)
    if pixel_format == "nv12":
        data = luma.tobytes() + chroma.tobytes()
    else:
        data = luma.tobytes() + chroma[..., 0].tobytes() + chroma[..., 1].tobytes()
    source = SourceFrame(pixel_format, width, height, data, 1, color_matrix="bt601")
    params = {"width": width, "height": height, "layers": {"in_0": {"rect": rect(0, 0, width, height)}}}
    output = render(gl_ctx, params, {"in_0": source}).as_array()
    # Chroma upsampled bilinearly at each luma pixel centre, then converted.
    u, v = np.meshgrid((np.arange(width) + 0.5) / width, (np.arange(height) + 0.5) / height)
    upsampled = sample_bilinear(chroma.astype(np.float64), u, v)
    expected = ycbcr_limited_to_rgb(np.concatenate([luma[..., None].astype(np.float64), upsampled], axis=-1), "bt601")
    reference = np.concatenate([expected, np.ones((height, width, 1))], axis=-1)
    assert_matches(output, reference, np.zeros((height, width), dtype=bool))


def test_transparent_background_stays_premultiplied(gl_ctx: moderngl.Context) -> None:
    output = render(gl_ctx, {"width": 32, "height": 16, "background": "#FF000080"}, {}).as_array()
    assert np.abs(output.astype(int) - [128, 0, 0, 128]).max() <= 1


# -- behaviour ----------------------------------------------------------------


def test_sources_upload_only_when_serial_changes(gl_ctx: moderngl.Context) -> None:
    pixels = gradient(32, 32)
    params = full(canvas(layers={"in_0": {"rect": rect(10, 10, 64, 64)}}))
    renderer = Renderer(gl_ctx, W, H)
    try:
        frames = {"in_0": frame(pixels, serial=1)}
        scene = resolve_scene(params, frames)
        first = renderer.render(scene, frames)
        renderer.render(scene, frames)
        assert renderer.stats.source_uploads == 1
        changed_pixels = 255 - pixels | np.uint8(0)
        changed = {"in_0": frame(changed_pixels, serial=2)}
        changed_pixels[..., 3] = 255  # the frame holds this array, not a copy
        second = renderer.render(scene, changed)
        assert renderer.stats.source_uploads == 2
        assert first.data != second.data
    finally:
        renderer.release()


def test_opaque_full_frame_bottom_layer_is_written_straight_into_the_target(gl_ctx: moderngl.Context) -> None:
    pixels = gradient(W, H)
    frames = {"in_0": frame(pixels), "in_1": frame(gradient(20, 20))}
    renderer = Renderer(gl_ctx, W, H)
    try:
        output = renderer.render(resolve_scene(full(canvas()), frames), frames)
        assert renderer.stats.direct_writes == 1
        # Outside the auto-PiP of in_1 the frame is the source, bit for bit.
        assert np.array_equal(output.as_array()[:60, :100], pixels[:60, :100])
        # Not for a rotated bottom layer: that one is drawn.
        rotated = resolve_scene(full(canvas(layers={"in_0": {"rotation_degrees": 1}})), frames)
        renderer.render(rotated, frames)
        assert renderer.stats.direct_writes == 1
    finally:
        renderer.release()


def test_readback_modes_give_the_same_bytes(gl_ctx: moderngl.Context) -> None:
    frames = {"in_0": frame(gradient(48, 32)), "in_1": frame(gradient(16, 16, alpha=200))}
    results = {}
    for output_format in ("rgba8", "nv12", "i420"):
        scene = resolve_scene(full(canvas(output_format=output_format, layers={"in_1": {"rotation_degrees": 33}})), frames)
        for mode in ("direct", "pbo"):
            renderer = Renderer(gl_ctx, W, H, readback=mode)
            try:
                results[output_format, mode] = renderer.render(scene, frames).data
            finally:
                renderer.release()
        assert results[output_format, "direct"] == results[output_format, "pbo"]


def test_canvas_and_format_follow_the_scene(gl_ctx: moderngl.Context) -> None:
    renderer = Renderer(gl_ctx, 64, 64)
    try:
        out = renderer.render(resolve_scene(full({"width": 96, "height": 40, "output_format": "i420"}), {}), {})
        assert (out.width, out.height, out.pixel_format, len(out.data)) == (96, 40, "i420", 96 * 40 * 3 // 2)
    finally:
        renderer.release()


def test_missing_asset_at_render_time_skips_the_overlay(gl_ctx: moderngl.Context, tmp_path: Path) -> None:
    Image.fromarray(gradient(8, 8)).save(tmp_path / "a.png")
    params = full(canvas(image_overlays=[{"id": "a", "asset_path": "a.png", "rect": rect(0, 0, 8, 8)}]))
    scene = resolve_scene(params, {}, asset_dir=tmp_path)
    renderer = Renderer(gl_ctx, W, H, asset_dir=tmp_path)
    try:
        renderer.render(scene, {})
        (tmp_path / "a.png").unlink()
        renderer.render(scene, {})
        assert "a" in renderer.overlay_errors
    finally:
        renderer.release()


def test_release_is_idempotent_and_render_after_release_fails(gl_ctx: moderngl.Context) -> None:
    renderer = Renderer(gl_ctx, 32, 32)
    renderer.release()
    renderer.release()
    with pytest.raises(RuntimeError, match="after release"):
        renderer.render(resolve_scene(full({"width": 32, "height": 32}), {}), {})


def test_text_is_rasterized_once_until_its_params_change(gl_ctx: moderngl.Context) -> None:
    def scene_with(text: str) -> ResolvedScene:
        return resolve_scene(full(canvas(text_overlays=[{"id": "t", "text": text, "rect": rect(4, 4, 100, 30)}])), {})

    renderer = Renderer(gl_ctx, W, H)
    try:
        for _ in range(3):
            renderer.render(scene_with("same"), {})
        assert renderer.stats.text_rasterizations == 1
        changed = renderer.render(scene_with("other"), {})
        assert renderer.stats.text_rasterizations == 2
        back = renderer.render(scene_with("same"), {})
        assert renderer.stats.text_rasterizations == 3  # the unused raster was released, not kept forever
        assert changed.data != back.data
    finally:
        renderer.release()
