"""GPU copies of inputs and overlays, uploaded only when their content changed.

Every RGBA texture here has BGRA-ordered storage holding our RGBA bytes
(``raw_gl`` says why): uploads go through ``raw_gl.upload_rgba``, never
``Texture.write``.
"""

from __future__ import annotations

import moderngl
import numpy as np

from compositord.daemon.engine.render import raw_gl
from compositord.daemon.engine.render.frames import SourceFrame
from compositord.daemon.engine.render.layer_pass import configure_sampling
from compositord.daemon.engine.render.yuv_input_pass import YuvInputPass, plane_shapes


def as_buffer(data: bytes | np.ndarray) -> bytes | memoryview:
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).data.cast("B")
    return data


class SourceTexture:
    """One input's RGBA texture; YUV frames go through their plane textures and the conversion pass."""

    def __init__(self, ctx: moderngl.Context, yuv_pass: YuvInputPass) -> None:
        self._ctx = ctx
        self._yuv_pass = yuv_pass
        self._shape: tuple[str, int, int] | None = None
        self._serial: int | None = None
        self.rgba: moderngl.Texture | None = None
        self._planes: list[moderngl.Texture] = []
        self._fbo: moderngl.Framebuffer | None = None
        self.premultiplied = False
        self.opaque = False
        self.uploads = 0

    def needs_upload(self, frame: SourceFrame) -> bool:
        """Whether ``update(frame)`` would upload: a new serial or a new shape."""
        return (frame.pixel_format, frame.width, frame.height) != self._shape or frame.serial != self._serial

    def update(self, frame: SourceFrame) -> bool:
        """Upload ``frame`` unless its serial is the one already on the GPU; True when uploaded."""
        if not self.needs_upload(frame):
            return False
        shape = (frame.pixel_format, frame.width, frame.height)
        if shape != self._shape:
            self._release_textures()
            self._allocate(shape)
        self._serial = frame.serial
        self.premultiplied = frame.premultiplied or frame.pixel_format != "rgba8"
        self.opaque = frame.opaque or frame.pixel_format != "rgba8"
        data = as_buffer(frame.data)
        assert self.rgba is not None
        if frame.pixel_format == "rgba8":
            raw_gl.upload_rgba(self.rgba, data)
        else:
            view = memoryview(data).cast("B")
            offset = 0
            for plane in self._planes:
                size = plane.width * plane.height * plane.components
                plane.write(view[offset : offset + size])
                offset += size
            assert self._fbo is not None
            self._yuv_pass.convert(frame.pixel_format, self._planes, self._fbo, (frame.width, frame.height), frame.color_matrix)
        self.uploads += 1
        return True

    def _allocate(self, shape: tuple[str, int, int]) -> None:
        pixel_format, width, height = shape
        self.rgba = self._ctx.texture((width, height), 4)
        raw_gl.allocate_rgba(self.rgba)
        configure_sampling(self.rgba)
        if pixel_format != "rgba8":
            for plane_w, plane_h, components in plane_shapes(pixel_format, width, height):
                plane = self._ctx.texture((plane_w, plane_h), components)
                configure_sampling(plane)
                self._planes.append(plane)
            self._fbo = self._ctx.framebuffer(color_attachments=[self.rgba])
        self._shape = shape

    def _release_textures(self) -> None:
        if self._fbo is not None:
            self._fbo.release()
            self._fbo = None
        for plane in self._planes:
            plane.release()
        self._planes = []
        if self.rgba is not None:
            self.rgba.release()
            self.rgba = None
        self._shape = None
        self._serial = None

    def release(self) -> None:
        self._release_textures()


class StaticTexture:
    """A premultiplied RGBA texture made once from host pixels (text raster, image overlay)."""

    def __init__(self, ctx: moderngl.Context, pixels: np.ndarray) -> None:
        height, width = pixels.shape[:2]
        self.texture = ctx.texture((width, height), 4)
        raw_gl.allocate_rgba(self.texture)
        raw_gl.upload_rgba(self.texture, pixels)
        configure_sampling(self.texture)
        self.opaque = bool((pixels[..., 3] == 255).all())
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.texture.release()
