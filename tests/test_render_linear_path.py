"""The RGBA path as llvmpipe's linear rasterizer draws it (daemon/engine/render/raw_gl.py), against the NumPy model.

llvmpipe draws a layer with its 8-bit fixed-point linear rasterizer when the
layer is a screen-aligned rectangle drawn by the branch-free layer program
into BGRA-ordered storage; a rotated layer goes through the general pipeline
in a scene of its own. These scenes are the compositor_only benchmark's in
small: an opaque full-frame bottom layer written straight into the target,
layers minified 2x at opacity 0.8 (opaque ones take the PASS program with
constant-alpha blending, translucent premultiplied ones PLAIN, straight alpha
the full program), rotated layers (straight alpha; opaque at opacity 0.6)
between rectangles; with smooth content and with the sharp edges of colour
bars. Same tolerance and
edge band as tests/test_renderer.py.
"""

from __future__ import annotations

import moderngl
import numpy as np
import pytest

from compositord.daemon.engine.render import raw_gl
from compositord.daemon.engine.render.frames import SourceFrame
from compositord.daemon.engine.render.renderer import Renderer
from compositord.daemon.engine.render.scene import resolve_scene
from compositord.protocol import params as protocol_params
from compositord.tests.render_reference import EDGE_BAND, RefLayer, assert_close, composite, gradient

pytestmark = pytest.mark.gl

W, H = 320, 180
PIP_W, PIP_H = 80, 45


def bars(width: int, height: int, alpha: int = 255) -> np.ndarray:
    """Seven vertical colour bars: sharp edges every width/7 pixels."""
    colours = np.array(
        [[192, 192, 192], [192, 192, 0], [0, 192, 192], [0, 192, 0], [192, 0, 192], [192, 0, 0], [0, 0, 192]], dtype=np.uint8
    )
    index = np.minimum(np.arange(width) * 7 // width, 6)
    image = np.empty((height, width, 4), dtype=np.uint8)
    image[..., :3] = colours[index][None, :, :]
    image[..., 3] = alpha
    return image


def premultiplied(image: np.ndarray) -> np.ndarray:
    out = image.copy()
    out[..., :3] = np.rint(image[..., :3].astype(np.float64) * image[..., 3:4] / 255.0).astype(np.uint8)
    return out


def render(ctx: moderngl.Context, params: dict, frames: dict[str, SourceFrame]) -> np.ndarray:
    full = protocol_params.with_defaults("video::compositor", protocol_params.validate("video::compositor", params))
    scene = resolve_scene(full, frames)
    renderer = Renderer(ctx, W, H)
    try:
        output = renderer.render(scene, frames)
        assert renderer.stats.direct_writes == 1  # the bottom layer took the texture-write path
        return output.as_array()
    finally:
        renderer.release()


@pytest.mark.parametrize("content", ["smooth", "bars"])
def test_benchmark_like_scene_matches_the_model(gl_ctx: moderngl.Context, content: str) -> None:
    make = (
        (lambda w, h, alpha=255, seed=0: gradient(w, h, alpha, seed))
        if content == "smooth"
        else (lambda w, h, alpha=255, seed=0: bars(w, h, alpha))
    )
    background = make(W, H, seed=1)
    opaque = make(2 * PIP_W, 2 * PIP_H, seed=2)
    translucent = premultiplied(make(2 * PIP_W, 2 * PIP_H, alpha=160, seed=3))
    straight = make(2 * PIP_W, 2 * PIP_H, alpha=200, seed=0)
    last = make(2 * PIP_W, 2 * PIP_H, seed=3)
    placements = {"in_1": (8, 8), "in_2": (120, 100), "in_3": (120, 60), "in_4": (230, 8), "in_5": (20, 110)}
    layers: dict = {"in_0": {"rect": {"x": 0, "y": 0, "width": W, "height": H}}}
    for pin, (x, y) in placements.items():
        layers[pin] = {"rect": {"x": x, "y": y, "width": PIP_W, "height": PIP_H}, "opacity": 0.8}
    layers["in_3"]["rotation_degrees"] = 15.0
    layers["in_5"].update(rotation_degrees=-20.0, opacity=0.6)
    params = {"width": W, "height": H, "num_inputs": 6, "layers": layers}
    frames = {
        "in_0": SourceFrame("rgba8", W, H, background, 1, opaque=True),
        "in_1": SourceFrame("rgba8", 2 * PIP_W, 2 * PIP_H, opaque, 1, opaque=True),
        "in_2": SourceFrame("rgba8", 2 * PIP_W, 2 * PIP_H, translucent, 1, premultiplied=True),
        "in_3": SourceFrame("rgba8", 2 * PIP_W, 2 * PIP_H, straight, 1),
        "in_4": SourceFrame("rgba8", 2 * PIP_W, 2 * PIP_H, last, 1, opaque=True),
        "in_5": SourceFrame("rgba8", 2 * PIP_W, 2 * PIP_H, opaque, 2, opaque=True),
    }
    output = render(gl_ctx, params, frames)
    reference_layers = [
        RefLayer(background, 0, 0, W, H),
        RefLayer(opaque, 8, 8, PIP_W, PIP_H, opacity=0.8),
        RefLayer(translucent, 120, 100, PIP_W, PIP_H, opacity=0.8, premultiplied=True),
        RefLayer(straight, 120, 60, PIP_W, PIP_H, opacity=0.8, rotation_degrees=15.0),
        RefLayer(last, 230, 8, PIP_W, PIP_H, opacity=0.8),
        RefLayer(opaque, 20, 110, PIP_W, PIP_H, opacity=0.6, rotation_degrees=-20.0),
    ]
    reference, edges = composite(W, H, (0.0, 0.0, 0.0, 1.0), reference_layers, EDGE_BAND)
    assert (~edges).mean() > 0.6
    assert_close(output, reference * 255.0, edges)
    # Red and blue are not exchanged anywhere: a bar or gradient with unequal red and blue is compared above,
    # and the model's own channels differ enough for a swap to show.
    swapped = reference[..., [2, 1, 0, 3]] * 255.0
    assert np.abs(output.astype(np.float64) - swapped)[~edges].max() > 20


def test_rgba_bytes_round_trip_through_bgra_storage(gl_ctx: moderngl.Context) -> None:
    width, height = 37, 23  # odd sizes: rows not 4-aligned in any format but RGBA
    pixels = np.random.default_rng(7).integers(0, 256, size=(height, width, 4), dtype=np.uint8)
    texture = gl_ctx.texture((width, height), 4)
    framebuffer = gl_ctx.framebuffer(color_attachments=[texture])
    try:
        raw_gl.allocate_rgba(texture)
        raw_gl.upload_rgba(texture, pixels)
        assert raw_gl.read_rgba(framebuffer, width, height) == pixels.tobytes()
        raw_gl.upload_rgba(texture, pixels.tobytes()[::-1])  # bytes, not an array
        assert raw_gl.read_rgba(framebuffer, width, height) == pixels.tobytes()[::-1]
        buffer = gl_ctx.buffer(reserve=width * height * 4 + 8)
        try:
            raw_gl.read_rgba_into(framebuffer, width, height, buffer, 8)
            assert buffer.read()[8:] == pixels.tobytes()[::-1]
            with pytest.raises(raw_gl.RawGLError, match="overruns"):
                raw_gl.read_rgba_into(framebuffer, width, height, buffer, 9)
        finally:
            buffer.release()
        assert gl_ctx.error == "GL_NO_ERROR"
    finally:
        framebuffer.release()
        texture.release()


def test_upload_of_the_wrong_size_is_refused_before_gl_reads_it(gl_ctx: moderngl.Context) -> None:
    texture = gl_ctx.texture((8, 4), 4)
    try:
        raw_gl.allocate_rgba(texture)
        with pytest.raises(raw_gl.RawGLError, match=r"127 bytes for a 8x4 RGBA texture \(128 needed\)"):
            raw_gl.upload_rgba(texture, bytes(127))
        single = gl_ctx.texture((8, 4), 1)
        try:
            with pytest.raises(raw_gl.RawGLError, match="4-component"):
                raw_gl.allocate_rgba(single)
        finally:
            single.release()
    finally:
        texture.release()


def test_stored_color_exchanges_red_and_blue() -> None:
    assert raw_gl.stored_color(0.1, 0.2, 0.3, 0.4) == (0.3, 0.2, 0.1, 0.4)
