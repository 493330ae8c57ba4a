"""The layer pass: one textured quad per layer (video, image or text), premultiplied alpha.

Three variants of ``layer.glsl``, the cheapest that applies: ``PASS`` (the
texel as is) for an opaque source without a circle, its opacity applied by
constant-alpha blending; ``PLAIN`` (texel times opacity) for a premultiplied
source without a circle; the full program (premultiplying, circle mask)
otherwise. Measured in docs/RENDERING.md "Speed on llvmpipe".
"""

from __future__ import annotations

import math

import moderngl
import numpy as np

from compositord.daemon.engine.render import raw_gl
from compositord.daemon.engine.render.scene import ResolvedLayer
from compositord.daemon.engine.render.shader_loader import compile_program, uniform

# Unit quad as a triangle fan, (0,0) = top-left corner of the rect. A fan, not a strip: llvmpipe
# recognizes a 4-vertex fan (or 6-vertex triangle list) as a screen-aligned rectangle, which its
# linear rasterizer draws (raw_gl); with GL's last-vertex convention it never merges a strip.
_QUAD = np.array([0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0], dtype="f4")


def is_screen_aligned(layer: ResolvedLayer) -> bool:
    """Drawn as a screen-aligned rectangle (a multiple of 90 degrees): what llvmpipe's linear rasterizer takes."""
    return layer.rotation_degrees % 90.0 == 0.0


def configure_sampling(texture: moderngl.Texture) -> None:
    """Bilinear, clamped: a rect's edge never samples the opposite side of its source."""
    texture.filter = (moderngl.LINEAR, moderngl.LINEAR)
    texture.repeat_x = False
    texture.repeat_y = False


class LayerPass:
    """Owns the layer program and its quad; ``draw`` renders one layer into the bound framebuffer."""

    def __init__(self, ctx: moderngl.Context) -> None:
        self._ctx = ctx
        self._program = compile_program(ctx, "layer")
        # Branch-free variant for the common case; measured in perf/README.md.
        self._plain_program = compile_program(ctx, "layer", ("PLAIN",))
        self._pass_program = compile_program(ctx, "layer", ("PASS",))
        self._quad = ctx.buffer(_QUAD.tobytes())
        self._vao = ctx.vertex_array(self._program, [(self._quad, "2f", "in_corner")])
        self._plain_vao = ctx.vertex_array(self._plain_program, [(self._quad, "2f", "in_corner")])
        self._pass_vao = ctx.vertex_array(self._pass_program, [(self._quad, "2f", "in_corner")])
        self._released = False

    def draw(
        self,
        texture: moderngl.Texture,
        layer: ResolvedLayer,
        canvas_size: tuple[int, int],
        *,
        premultiply: bool,
        opaque_source: bool,
    ) -> None:
        rect = layer.rect
        angle = math.radians(layer.rotation_degrees)
        crop = layer.crop
        u_origin, u_step = (crop.u1, crop.u0 - crop.u1) if layer.mirror_horizontal else (crop.u0, crop.u1 - crop.u0)
        v_origin, v_step = (crop.v1, crop.v0 - crop.v1) if layer.mirror_vertical else (crop.v0, crop.v1 - crop.v0)
        radius = min(rect.width, rect.height) / 2.0 if layer.circle else 0.0
        # Every texel of an opaque source has alpha 1, so "over" at opacity o is o * src + (1 - o) * dst:
        # constant-alpha blending of the texel as is. llvmpipe's linear rasterizer draws that about
        # 40 % faster than texel * opacity blended by its own alpha (docs/RENDERING.md).
        as_is = opaque_source and not premultiply and not layer.circle
        plain = not as_is and not premultiply and not layer.circle
        if as_is:
            program, vao = self._pass_program, self._pass_vao
        elif plain:
            program, vao = self._plain_program, self._plain_vao
        else:
            program, vao = self._program, self._vao
        uniform(program, "u_canvas_size").value = (float(canvas_size[0]), float(canvas_size[1]))
        uniform(program, "u_center").value = rect.center
        uniform(program, "u_size").value = (rect.width, rect.height)
        uniform(program, "u_rotation").value = (math.cos(angle), math.sin(angle))
        uniform(program, "u_uv_origin").value = (u_origin, v_origin)
        uniform(program, "u_uv_step").value = (u_step, v_step)
        if not as_is:
            uniform(program, "u_opacity").value = layer.opacity
        if not (as_is or plain):
            uniform(program, "u_premultiply").value = premultiply
            uniform(program, "u_circle_radius").value = radius
        texture.use(location=0)
        uniform(program, "u_texture").value = 0
        if opaque_source and layer.opacity >= 1.0 and not layer.circle:
            # An opaque source at full opacity replaces what is below: no blending needed (faster on llvmpipe).
            self._ctx.disable(moderngl.BLEND)
        elif as_is:
            self._ctx.enable(moderngl.BLEND)
            self._ctx.blend_func = raw_gl.GL_CONSTANT_ALPHA, raw_gl.GL_ONE_MINUS_CONSTANT_ALPHA
            raw_gl.blend_color(0.0, 0.0, 0.0, layer.opacity)
        else:
            self._ctx.enable(moderngl.BLEND)
            self._ctx.blend_func = moderngl.ONE, moderngl.ONE_MINUS_SRC_ALPHA
        vao.render(moderngl.TRIANGLE_FAN)

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        self._pass_vao.release()
        self._plain_vao.release()
        self._vao.release()
        self._quad.release()
        self._pass_program.release()
        self._plain_program.release()
        self._program.release()
