"""Input conversion: NV12 / I420 sources uploaded as planes (1.5 bytes per pixel), turned into RGBA once per new frame."""

from __future__ import annotations

import moderngl

from compositord.daemon.engine.render.frames import chroma_size
from compositord.daemon.engine.render.shader_loader import compile_program, uniform

MATRIX_INDEX = {"bt601": 0, "bt709": 1}


class YuvInputPass:
    """Owns the two conversion programs; ``convert`` draws planes into an RGBA framebuffer."""

    def __init__(self, ctx: moderngl.Context) -> None:
        self._ctx = ctx
        self._programs = {
            "nv12": compile_program(ctx, "yuv_to_rgba", ("NV12",)),
            "i420": compile_program(ctx, "yuv_to_rgba", ("I420",)),
        }
        self._vaos = {name: ctx.vertex_array(program, []) for name, program in self._programs.items()}
        self._released = False

    def convert(
        self,
        pixel_format: str,
        planes: list[moderngl.Texture],
        target: moderngl.Framebuffer,
        size: tuple[int, int],
        color_matrix: str,
    ) -> None:
        program = self._programs[pixel_format]
        names = ("u_luma", "u_chroma") if pixel_format == "nv12" else ("u_luma", "u_cb", "u_cr")
        for location, (name, plane) in enumerate(zip(names, planes, strict=True)):
            plane.use(location=location)
            uniform(program, name).value = location
        uniform(program, "u_size").value = (float(size[0]), float(size[1]))
        uniform(program, "u_matrix").value = MATRIX_INDEX[color_matrix]
        target.use()
        self._ctx.disable(moderngl.BLEND)
        self._vaos[pixel_format].render(moderngl.TRIANGLES, vertices=3)

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        for vao in self._vaos.values():
            vao.release()
        for program in self._programs.values():
            program.release()


def plane_shapes(pixel_format: str, width: int, height: int) -> list[tuple[int, int, int]]:
    """(width, height, components) of each uploaded plane."""
    chroma_w, chroma_h = chroma_size(width, height)
    if pixel_format == "nv12":
        return [(width, height, 1), (chroma_w, chroma_h, 2)]
    return [(width, height, 1), (chroma_w, chroma_h, 1), (chroma_w, chroma_h, 1)]
