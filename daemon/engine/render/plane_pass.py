"""NV12 in, NV12 out: compositing the Y and the CbCr planes separately, with no RGBA in between.

This is the big win for NV12 output on llvmpipe (2.0-2.3x the
RGBA-then-convert path, docs/RENDERING.md): no YUV -> RGBA pass per new source
frame, no RGBA -> YUV pass per output frame, and a quarter of the fragments
for chroma. It applies when every layer of the scene is a video input whose
frame is NV12 in the scene's colour matrix, the canvas has even sides, and
the background is opaque (or an opaque full-frame bottom layer covers it).
Anything else (overlays, RGBA inputs, another matrix) takes the RGBA path.

Why it is exact enough: limited-range Y'CbCr is an affine map of R'G'B' whose
weights sum to one, so "over" with an opaque source (``a*src + (1-a)*dst``)
commutes with it. A layer is drawn into the luma target with its own rect
and into the chroma target (half size) with the rect halved: a chroma texel
sits at the centre of its 2x2 luma block, which the halved geometry maps to
the same point of the source, where the source's chroma is sampled
bilinearly. The layer program is the RGBA one: an R8 / RG8 texture samples
as (Y, 0, 0, 1) / (Cb, Cr, 0, 1), so the output is the premultiplied value
and its alpha the opacity (times the circle coverage).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import moderngl

from compositord.daemon.engine.render import raw_gl
from compositord.daemon.engine.render.frames import LUMA_COEFFICIENTS, InputFrame, SourceFrame, chroma_size
from compositord.daemon.engine.render.layer_pass import LayerPass, configure_sampling
from compositord.daemon.engine.render.scene import ResolvedLayer, ResolvedScene
from compositord.daemon.engine.render.source_textures import as_buffer
from compositord.protocol.layout import Rect


def rgb_to_ycbcr_limited(rgb: tuple[float, float, float], matrix: str) -> tuple[float, float, float]:
    """Normalized 0..1 Y'CbCr of an R'G'B' colour, as shaders/color.glsl computes it."""
    kr, kb = LUMA_COEFFICIENTS[matrix]
    r, g, b = rgb
    y = kr * r + (1.0 - kr - kb) * g + kb * b
    cb = (b - y) / (2.0 * (1.0 - kb))
    cr = (r - y) / (2.0 * (1.0 - kr))
    return ((16.0 + 219.0 * y) / 255.0, (128.0 + 224.0 * cb) / 255.0, (128.0 + 224.0 * cr) / 255.0)


def is_full_frame_unscaled(layer: ResolvedLayer, canvas: tuple[int, int], frame: SourceFrame) -> bool:
    """The layer shows its whole frame 1:1 over the whole canvas, opaque: its pixels *are* the bottom."""
    return (frame.opaque or frame.pixel_format != "rgba8") and layer.covers_canvas_unscaled((frame.width, frame.height), canvas)


def planes_apply(scene: ResolvedScene, frames: Mapping[str, InputFrame]) -> bool:
    """Whether ``scene`` can be composited plane by plane (see the module docstring)."""
    if scene.output_format != "nv12" or scene.width % 2 or scene.height % 2:
        return False
    nv12: list[SourceFrame] = []
    for layer in scene.layers:
        frame = frames.get(layer.id) if layer.kind == "video" else None
        if not isinstance(frame, SourceFrame) or frame.pixel_format != "nv12" or frame.color_matrix != scene.color_matrix:
            return False  # an overlay, an RGBA input, another compositor's picture, another matrix
        nv12.append(frame)
    if scene.background[3] >= 1.0:
        return True
    # A transparent background shows through unless an opaque full-frame bottom layer covers it.
    return bool(scene.layers) and is_full_frame_unscaled(scene.layers[0], (scene.width, scene.height), nv12[0])


class PlaneSource:
    """One NV12 input as two textures (Y: R8, CbCr: RG8), uploaded only when the serial changes."""

    def __init__(self, ctx: moderngl.Context) -> None:
        self._ctx = ctx
        self._size: tuple[int, int] | None = None
        self._serial: int | None = None
        self.luma: moderngl.Texture | None = None
        self.chroma: moderngl.Texture | None = None

    def update(self, frame: SourceFrame) -> bool:
        size = (frame.width, frame.height)
        if size != self._size:
            self.release()
            self.luma = self._ctx.texture(size, 1)
            self.chroma = self._ctx.texture(chroma_size(*size), 2)
            configure_sampling(self.luma)
            configure_sampling(self.chroma)
            self._size = size
        elif frame.serial == self._serial:
            return False
        assert self.luma is not None and self.chroma is not None
        view = memoryview(as_buffer(frame.data)).cast("B")
        luma_bytes = frame.width * frame.height
        self.luma.write(view[:luma_bytes])
        self.chroma.write(view[luma_bytes:])
        self._serial = frame.serial
        return True

    def release(self) -> None:
        for texture in (self.luma, self.chroma):
            if texture is not None:
                texture.release()
        self.luma = self.chroma = None
        self._size = None
        self._serial = None


def halved(layer: ResolvedLayer) -> ResolvedLayer:
    """The layer in chroma-plane pixels (half the canvas each way)."""
    rect = layer.rect
    return dataclasses.replace(layer, rect=Rect(rect.x / 2.0, rect.y / 2.0, rect.width / 2.0, rect.height / 2.0))


def draw_planes(
    ctx: moderngl.Context,
    layer_pass: LayerPass,
    scene: ResolvedScene,
    frames: Mapping[str, SourceFrame],
    sources: dict[str, PlaneSource],
    luma_target: tuple[moderngl.Texture, moderngl.Framebuffer],
    chroma_target: tuple[moderngl.Texture, moderngl.Framebuffer],
) -> tuple[int, bool]:
    """Composite ``scene`` into the two plane targets; returns (sources uploaded, bottom written directly)."""
    canvas = (scene.width, scene.height)
    chroma_canvas = chroma_size(*canvas)
    luma_texture, luma_fbo = luma_target
    chroma_texture, chroma_fbo = chroma_target
    layers = list(scene.layers)
    uploads = 0
    direct = bool(layers) and is_full_frame_unscaled(layers[0], canvas, frames[layers[0].id])
    if direct:
        bottom = frames[layers[0].id]
        view = memoryview(as_buffer(bottom.data)).cast("B")
        luma_texture.write(view[: scene.width * scene.height])
        chroma_texture.write(view[scene.width * scene.height :])
        layers = layers[1:]
    else:
        r, g, b, _ = scene.background
        y, cb, cr = rgb_to_ycbcr_limited((r, g, b), scene.color_matrix)
        luma_fbo.clear(y, 0.0, 0.0, 1.0)
        chroma_fbo.clear(cb, cr, 0.0, 1.0)
    for layer in layers:
        if layer.opacity <= 0.0 or layer.rect.width <= 0 or layer.rect.height <= 0:
            continue
        source = sources.get(layer.id)
        if source is None:
            source = sources[layer.id] = PlaneSource(ctx)
        if source.update(frames[layer.id]):
            uploads += 1
        assert source.luma is not None and source.chroma is not None
        # After each draw, hand it to llvmpipe through ctypes, which releases the GIL: with rasterizer
        # threads it starts at once; without (LP_NUM_THREADS=0) this thread rasterizes it here, GIL-free,
        # so other Python threads (an encoder, the daemon's trio thread) run meanwhile. Otherwise it is
        # rasterized inside the next moderngl call (binding the other plane's framebuffer flushes the
        # draw, and the read back the last one), which holds the GIL throughout. compositor_pipeline:
        # perf notes.
        luma_fbo.use()
        layer_pass.draw(source.luma, layer, canvas, premultiply=False, opaque_source=True)
        raw_gl.flush()
        chroma_fbo.use()
        layer_pass.draw(source.chroma, halved(layer), chroma_canvas, premultiply=False, opaque_source=True)
        raw_gl.flush()
    return uploads, direct
