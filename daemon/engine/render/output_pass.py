"""The render target and the output conversion: RGBA as is, or NV12 / I420 planes drawn by a shader pass."""

from __future__ import annotations

from typing import TypeVar

import moderngl

from compositord.daemon.engine.render import raw_gl
from compositord.daemon.engine.render.frames import chroma_size
from compositord.daemon.engine.render.shader_loader import compile_program, uniform
from compositord.daemon.engine.render.yuv_input_pass import MATRIX_INDEX

# The GL objects OutputTargets owns and releases; _keep hands each back as the type it was given.
_GLObject = TypeVar("_GLObject", moderngl.Buffer, moderngl.Texture, moderngl.Framebuffer, moderngl.Program, moderngl.VertexArray)


class PlaneTarget:
    """One framebuffer attachment to read back: (framebuffer, attachment, components, width, height)."""

    def __init__(self, fbo: moderngl.Framebuffer, attachment: int, components: int, width: int, height: int) -> None:
        self.fbo = fbo
        self.attachment = attachment
        self.components = components
        self.width = width
        self.height = height

    @property
    def nbytes(self) -> int:
        return self.width * self.height * self.components


class OutputTargets:
    """The composited RGBA frame (premultiplied) and, for YUV output, the conversion pass and its planes.

    ``frame`` has BGRA-ordered storage holding RGBA (``raw_gl``): write it with
    ``raw_gl.upload_rgba``, clear it with ``raw_gl.stored_color``.
    """

    def __init__(self, ctx: moderngl.Context, width: int, height: int, output_format: str, color_matrix: str) -> None:
        self._ctx = ctx
        self.width = width
        self.height = height
        self.output_format = output_format
        self.color_matrix = color_matrix
        self._objects: list[
            moderngl.Buffer | moderngl.Texture | moderngl.Framebuffer | moderngl.Program | moderngl.VertexArray
        ] = []
        self.frame = self._keep(ctx.texture((width, height), 4))
        raw_gl.allocate_rgba(self.frame)
        self.frame.filter = (moderngl.LINEAR, moderngl.LINEAR)
        self.frame.repeat_x = False
        self.frame.repeat_y = False
        self.frame_fbo = self._keep(ctx.framebuffer(color_attachments=[self.frame]))
        self._passes: list[tuple[moderngl.Program, moderngl.VertexArray, moderngl.Framebuffer]] = []
        self.planes: list[PlaneTarget] = []
        # NV12 only: the plane targets as (texture, framebuffer), which plane-by-plane compositing draws into.
        self.luma_target: tuple[moderngl.Texture, moderngl.Framebuffer] | None = None
        self.chroma_target: tuple[moderngl.Texture, moderngl.Framebuffer] | None = None
        if output_format == "rgba8":
            self.planes.append(PlaneTarget(self.frame_fbo, 0, 4, width, height))
            return
        chroma_w, chroma_h = chroma_size(width, height)
        luma = self._keep(ctx.texture((width, height), 1))
        luma_fbo = self._keep(ctx.framebuffer(color_attachments=[luma]))
        self._add_pass("LUMA", luma_fbo)
        self.planes.append(PlaneTarget(luma_fbo, 0, 1, width, height))
        if output_format == "nv12":
            chroma = self._keep(ctx.texture((chroma_w, chroma_h), 2))
            chroma_fbo = self._keep(ctx.framebuffer(color_attachments=[chroma]))
            self._add_pass("CHROMA_NV12", chroma_fbo)
            self.planes.append(PlaneTarget(chroma_fbo, 0, 2, chroma_w, chroma_h))
            self.luma_target = (luma, luma_fbo)
            self.chroma_target = (chroma, chroma_fbo)
        elif output_format == "i420":
            cb = self._keep(ctx.texture((chroma_w, chroma_h), 1))
            cr = self._keep(ctx.texture((chroma_w, chroma_h), 1))
            chroma_fbo = self._keep(ctx.framebuffer(color_attachments=[cb, cr]))
            self._add_pass("CHROMA_I420", chroma_fbo)
            self.planes.append(PlaneTarget(chroma_fbo, 0, 1, chroma_w, chroma_h))
            self.planes.append(PlaneTarget(chroma_fbo, 1, 1, chroma_w, chroma_h))
        else:
            self.release()
            raise ValueError(f"output_format {output_format!r}: expected rgba8, nv12 or i420")

    def _keep(self, obj: _GLObject) -> _GLObject:
        self._objects.append(obj)
        return obj

    def _add_pass(self, variant: str, fbo: moderngl.Framebuffer) -> None:
        program = self._keep(compile_program(self._ctx, "rgba_to_yuv", (variant,)))
        vao = self._keep(self._ctx.vertex_array(program, []))
        self._passes.append((program, vao, fbo))

    @property
    def nbytes(self) -> int:
        return sum(plane.nbytes for plane in self.planes)

    def convert(self) -> None:
        """Draw the YUV planes from the composited frame (nothing to do for RGBA)."""
        if not self._passes:
            return
        self._ctx.disable(moderngl.BLEND)
        self.frame.use(location=0)
        for program, vao, fbo in self._passes:
            fbo.use()
            uniform(program, "u_frame").value = 0
            uniform(program, "u_matrix").value = MATRIX_INDEX[self.color_matrix]
            if "u_frame_size" in program:
                uniform(program, "u_frame_size").value = (float(self.width), float(self.height))
            vao.render(moderngl.TRIANGLES, vertices=3)

    def release(self) -> None:
        while self._objects:
            self._objects.pop().release()
