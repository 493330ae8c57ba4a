"""Scene transitions on the GPU: canvas-sized pictures and the pass that mixes two of them.

During a transition the renderer draws the incoming scene into a
:class:`Canvas`, and the outgoing one (or a snapshot of what the output
showed) either straight into the program's render target, when it stays in
place (fade, slide, wipe), or into a canvas of its own (push moves it).
:class:`TransitionPass` then lays the pictures into the target as
``protocol.scenes.MixGeometry`` says, each as one screen-aligned quad of the
layer program's ``PASS`` variant (``shaders/layer.glsl``: the texel as it is):

- fade: the incoming picture over the outgoing one with constant-alpha
  blending at the eased progress w, which is w * incoming + (1 - w) *
  outgoing for all four channels, opaque or not;
- slide, push, wipe: blending off, each picture copied at a whole-pixel
  offset (texel centres on pixel centres, so bilinear sampling returns the
  texels exactly), the incoming one cut to its region.

Both are what llvmpipe's linear rasterizer draws (docs/RENDERING.md,
"Transitions", has the measurement). Render thread only.
"""

from __future__ import annotations

import moderngl

from compositord.daemon.engine.render import raw_gl
from compositord.daemon.engine.render.layer_pass import LayerPass
from compositord.daemon.engine.render.scene import CropRegion, ResolvedLayer
from compositord.protocol.layout import Rect
from compositord.protocol.scenes import MixGeometry


class Canvas:
    """A canvas-sized RGBA picture (BGRA-ordered storage, ``raw_gl``) and a framebuffer to draw into it."""

    def __init__(self, ctx: moderngl.Context, width: int, height: int) -> None:
        self.width = width
        self.height = height
        self.texture = ctx.texture((width, height), 4)
        raw_gl.allocate_rgba(self.texture)
        # Sampled as a layer is: bilinear, clamped.
        self.texture.filter = (moderngl.LINEAR, moderngl.LINEAR)
        self.texture.repeat_x = False
        self.texture.repeat_y = False
        self.fbo = ctx.framebuffer(color_attachments=[self.texture])

    @property
    def size(self) -> tuple[int, int]:
        return (self.width, self.height)

    def release(self) -> None:
        self.fbo.release()
        self.texture.release()


def _picture(region: tuple[int, int, int, int], offset: tuple[int, int], size: tuple[int, int], opacity: float) -> ResolvedLayer:
    """A quad covering ``region`` (x0, y0, x1, y1) of the canvas, showing a canvas-sized picture moved by ``offset``."""
    x0, y0, x1, y1 = region
    width, height = size
    crop = CropRegion((x0 - offset[0]) / width, (y0 - offset[1]) / height, (x1 - offset[0]) / width, (y1 - offset[1]) / height)
    return ResolvedLayer(
        kind="video",
        id="transition",
        order=0,
        z_index=0,
        rect=Rect(float(x0), float(y0), float(x1 - x0), float(y1 - y0)),
        crop=crop,
        circle=False,
        rotation_degrees=0.0,
        mirror_horizontal=False,
        mirror_vertical=False,
        opacity=opacity,
        source_width=width,
        source_height=height,
    )


class TransitionPass:
    """Lays the two pictures of a transition frame into the target (see the module docstring)."""

    def __init__(self, layer_pass: LayerPass) -> None:
        self._layer_pass = layer_pass

    def draw(
        self,
        target: moderngl.Framebuffer,
        size: tuple[int, int],
        mix: MixGeometry,
        outgoing: moderngl.Texture | None,
        incoming: moderngl.Texture,
    ) -> None:
        """``outgoing`` None: the outgoing picture is in the target already (only where it stays in place)."""
        width, height = size
        whole = (0, 0, width, height)
        target.use()
        if outgoing is not None:
            dx, dy = mix.from_offset
            moved = (max(0, dx), max(0, dy), min(width, dx + width), min(height, dy + height))
            if moved[2] > moved[0] and moved[3] > moved[1]:
                self._draw(outgoing, _picture(moved, mix.from_offset, size, 1.0), size)
        elif mix.from_offset != (0, 0):
            raise ValueError(f"the outgoing picture moves ({mix.from_offset}): it must be given, not drawn in place")
        if mix.kind == "fade":
            self._draw(incoming, _picture(whole, (0, 0), size, mix.weight), size)
            return
        x0, y0, x1, y1 = mix.to_region
        if x1 > x0 and y1 > y0:
            self._draw(incoming, _picture(mix.to_region, mix.to_offset, size, 1.0), size)

    def _draw(self, texture: moderngl.Texture, quad: ResolvedLayer, size: tuple[int, int]) -> None:
        # "Opaque source" selects the PASS program: the texel as it is; at opacity 1 blending is off (a copy), below
        # it constant-alpha blending is exactly the mix. Neither needs the texels to be opaque.
        self._layer_pass.draw(texture, quad, size, premultiply=False, opaque_source=True)
