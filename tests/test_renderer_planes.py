"""NV12 in, NV12 out, composited plane by plane (daemon/engine/render/plane_pass.py), against the NumPy model.

The model decodes each NV12 source to RGB (chroma upsampled bilinearly at
the luma pixel centres), composites in RGB (tests/render_reference.py) and
converts the result to Y'CbCr with 2x2-averaged chroma: what the RGBA path
produces. Same tolerance and edge band as tests/test_renderer.py; a chroma
sample is left out when any of its four pixels is in an edge band.
"""

from __future__ import annotations

from typing import cast

import moderngl
import numpy as np
import pytest

from compositord.daemon.engine.render.frames import ColorMatrix, SourceFrame
from compositord.daemon.engine.render.renderer import Renderer
from compositord.daemon.engine.render.scene import resolve_scene
from compositord.protocol import params as protocol_params
from compositord.tests.render_reference import (
    EDGE_BAND,
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


def nv12_source(width: int, height: int, matrix: ColorMatrix, serial: int = 1, seed: int = 0) -> tuple[SourceFrame, np.ndarray]:
    """(the NV12 frame, its decoded RGBA as the model sees it)."""
    rgb = gradient(width, height, seed=seed)[..., :3].astype(np.float64) / 255.0
    ycbcr = rgb_to_ycbcr_limited(rgb, matrix)
    luma = np.rint(ycbcr[..., 0]).astype(np.uint8)
    chroma = np.rint(subsample_2x2(ycbcr[..., 1:])).astype(np.uint8)
    frame = SourceFrame("nv12", width, height, luma.tobytes() + chroma.tobytes(), serial, color_matrix=matrix)
    u, v = np.meshgrid((np.arange(width) + 0.5) / width, (np.arange(height) + 0.5) / height)
    upsampled = sample_bilinear(chroma.astype(np.float64), u, v)
    decoded = ycbcr_limited_to_rgb(np.concatenate([luma[..., None].astype(np.float64), upsampled], axis=-1), matrix)
    rgba = np.concatenate([np.rint(decoded * 255.0), np.full((height, width, 1), 255.0)], axis=-1).astype(np.uint8)
    return frame, rgba


def full(params: dict) -> dict:
    return protocol_params.with_defaults("video::compositor", protocol_params.validate("video::compositor", params))


def rect(x: int, y: int, width: int, height: int) -> dict:
    return {"x": x, "y": y, "width": width, "height": height}


def expected_planes(reference: np.ndarray, edges: np.ndarray, matrix: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ycbcr = rgb_to_ycbcr_limited(reference[..., :3], matrix)
    # With an axis, any() gives an array; numpy's stub also allows the scalar it gives without one.
    chroma_edges = cast(np.ndarray, edges.reshape(H // 2, 2, W // 2, 2).any(axis=(1, 3)))
    return ycbcr[..., 0], subsample_2x2(ycbcr[..., 1:]), chroma_edges


@pytest.mark.parametrize("matrix", ["bt601", "bt709"])
def test_scaled_rotated_translucent_layers_match_the_model(gl_ctx: moderngl.Context, matrix: ColorMatrix) -> None:
    a, a_rgba = nv12_source(40, 30, matrix)
    b, b_rgba = nv12_source(32, 24, matrix, seed=3)
    layers = {
        "in_0": {"rect": rect(10, 10, 80, 60), "opacity": 0.8},
        "in_1": {"rect": rect(50, 40, 96, 72), "opacity": 0.55, "rotation_degrees": 15},
    }
    params = {
        "width": W,
        "height": H,
        "background": BACKGROUND,
        "output_format": "nv12",
        "color_matrix": matrix,
        "layers": layers,
    }
    frames = {"in_0": a, "in_1": b}
    renderer = Renderer(gl_ctx, W, H, "nv12", matrix)
    try:
        output = renderer.render(resolve_scene(full(params), frames), frames)
        assert renderer.stats.plane_frames == 1
    finally:
        renderer.release()
    reference, edges = composite(
        W,
        H,
        BACKGROUND_RGBA,
        [RefLayer(a_rgba, 10, 10, 80, 60, opacity=0.8), RefLayer(b_rgba, 50, 40, 96, 72, opacity=0.55, rotation_degrees=15)],
        EDGE_BAND,
    )
    luma, chroma, chroma_edges = expected_planes(reference, edges, matrix)
    assert_close(output.plane(0), luma, edges)
    for channel in range(2):
        assert_close(output.plane(1)[..., channel], chroma[..., channel], chroma_edges)


def test_full_frame_bottom_is_written_into_the_planes_and_inputs_upload_once(gl_ctx: moderngl.Context) -> None:
    bottom, _ = nv12_source(W, H, "bt709")
    pip, _ = nv12_source(32, 24, "bt709", seed=5)
    frames = {"in_0": bottom, "in_1": pip}
    params = full({"width": W, "height": H, "output_format": "nv12"})  # in_1: auto-PiP, bottom-right
    renderer = Renderer(gl_ctx, W, H, "nv12")
    try:
        scene = resolve_scene(params, frames)
        output = renderer.render(scene, frames)
        renderer.render(scene, frames)
        assert renderer.stats.direct_writes == 2 and renderer.stats.plane_frames == 2
        assert renderer.stats.source_uploads == 1  # the PiP: once, as its serial did not change
        source = np.frombuffer(bottom.data, np.uint8)
        # Outside the PiP the output is the bottom frame, bit for bit, in both planes.
        assert np.array_equal(output.plane(0)[:60, :100], source[: W * H].reshape(H, W)[:60, :100])
        assert np.array_equal(output.plane(1)[:30, :50], source[W * H :].reshape(H // 2, W // 2, 2)[:30, :50])
    finally:
        renderer.release()


@pytest.mark.parametrize("case", ["text overlay", "rgba input", "other matrix", "transparent background"])
def test_scenes_it_cannot_do_take_the_rgba_path(gl_ctx: moderngl.Context, case: str) -> None:
    width = W + 2
    source, _ = nv12_source(32, 24, "bt601" if case == "other matrix" else "bt709")
    frames: dict[str, SourceFrame] = {"in_0": source}
    params: dict = {"width": width, "height": H, "output_format": "nv12"}
    if case == "text overlay":
        params["text_overlays"] = [{"id": "t", "text": "hi"}]
    if case == "transparent background":
        params["background"] = "#00000000"  # nothing opaque covers the whole canvas
    if case == "rgba input":
        frames["in_1"] = SourceFrame("rgba8", 8, 8, gradient(8, 8), 1, opaque=True)
    renderer = Renderer(gl_ctx, width, H, "nv12")
    try:
        output = renderer.render(resolve_scene(full(params), frames), frames)
        assert renderer.stats.plane_frames == 0
        assert len(output.data) == width * H + 2 * ((width + 1) // 2) * (H // 2)
    finally:
        renderer.release()
