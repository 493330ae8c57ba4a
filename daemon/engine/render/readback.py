"""Reading the output planes back into host memory.

Two strategies, measured on llvmpipe (docs/RENDERING.md):

- ``direct``: ``glReadPixels`` of each plane straight into host memory.
- ``pbo``: ``glReadPixels`` of every plane into one pixel buffer object at
  its offset, then one map of that buffer. On a GPU driver the copy into the
  PBO is asynchronous (the read returns before the pixels arrive, and the map
  waits only for them); on llvmpipe it is a CPU copy either way.
"""

from __future__ import annotations

from typing import Literal

import moderngl

from compositord.daemon.engine.render import raw_gl
from compositord.daemon.engine.render.output_pass import PlaneTarget

ReadbackMode = Literal["direct", "pbo"]
READBACK_MODES: tuple[str, ...] = ("direct", "pbo")


class Readback:
    def __init__(self, ctx: moderngl.Context, planes: list[PlaneTarget], mode: ReadbackMode) -> None:
        if mode not in READBACK_MODES:
            raise ValueError(f"readback mode {mode!r}: expected one of {', '.join(READBACK_MODES)}")
        self._planes = planes
        self.mode = mode
        total = sum(plane.nbytes for plane in planes)
        self._buffer: moderngl.Buffer | None = ctx.buffer(reserve=total) if mode == "pbo" else None

    def read(self) -> bytes:
        if self._buffer is None:
            chunks = [self._read_plane(plane) for plane in self._planes]
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        offset = 0
        for plane in self._planes:
            if plane.components == 4:
                raw_gl.read_rgba_into(plane.fbo, plane.width, plane.height, self._buffer, offset)
            else:
                plane.fbo.read_into(
                    self._buffer, components=plane.components, alignment=1, attachment=plane.attachment, write_offset=offset
                )
            offset += plane.nbytes
        return self._buffer.read()

    @staticmethod
    def _read_plane(plane: PlaneTarget) -> bytes:
        if plane.components == 4:
            # The RGBA frame (BGRA-ordered storage, raw_gl); read without holding the GIL while llvmpipe finishes.
            return raw_gl.read_rgba(plane.fbo, plane.width, plane.height)
        return plane.fbo.read(components=plane.components, alignment=1, attachment=plane.attachment)

    def release(self) -> None:
        if self._buffer is not None:
            self._buffer.release()
            self._buffer = None
