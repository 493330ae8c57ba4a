"""Scene transitions on the GPU: canvas-sized pictures and the pass that mixes two of them.

During a transition the renderer draws the outgoing scene (or a snapshot of
what was on screen) and the incoming scene each into a :class:`Canvas`, then
:class:`TransitionPass` mixes them into the program's render target as
``protocol.scenes.MixGeometry`` says (``shaders/transition.glsl``). Render
thread only.
"""

from __future__ import annotations

import moderngl

from compositord.daemon.engine.render import raw_gl
from compositord.daemon.engine.render.shader_loader import compile_program, uniform
from compositord.protocol.scenes import MixGeometry


class Canvas:
    """A canvas-sized RGBA picture (BGRA-ordered storage, ``raw_gl``) and a framebuffer to draw into it."""

    def __init__(self, ctx: moderngl.Context, width: int, height: int) -> None:
        self.width = width
        self.height = height
        self.texture = ctx.texture((width, height), 4)
        raw_gl.allocate_rgba(self.texture)
        # Drawn from as a layer (nested compositors): bilinear, clamped, as every source.
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


class TransitionPass:
    """Owns the two variants of ``transition.glsl``; :meth:`draw` writes every pixel of the target."""

    def __init__(self, ctx: moderngl.Context) -> None:
        self._ctx = ctx
        self._fade = compile_program(ctx, "transition", ("FADE",))
        self._move = compile_program(ctx, "transition", ("MOVE",))
        self._fade_vao = ctx.vertex_array(self._fade, [])
        self._move_vao = ctx.vertex_array(self._move, [])
        self._released = False

    def draw(
        self, outgoing: moderngl.Texture, incoming: moderngl.Texture, mix: MixGeometry, target: moderngl.Framebuffer
    ) -> None:
        if mix.kind == "fade":
            program, vao = self._fade, self._fade_vao
            uniform(program, "u_weight").value = mix.weight
        else:
            program, vao = self._move, self._move_vao
            uniform(program, "u_from_offset").value = mix.from_offset
            uniform(program, "u_to_offset").value = mix.to_offset
            uniform(program, "u_to_region").value = mix.to_region
        outgoing.use(location=0)
        incoming.use(location=1)
        uniform(program, "u_from").value = 0
        uniform(program, "u_to").value = 1
        target.use()
        self._ctx.disable(moderngl.BLEND)
        vao.render(moderngl.TRIANGLES, vertices=3)

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        self._move_vao.release()
        self._fade_vao.release()
        self._move.release()
        self._fade.release()
