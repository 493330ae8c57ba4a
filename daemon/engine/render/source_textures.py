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


class _TextureSet:
    """One copy of a source's textures: the RGBA texture layers are drawn from and, for a YUV frame, its
    plane textures and the framebuffer that converts them into it."""

    def __init__(self, ctx: moderngl.Context, shape: tuple[str, int, int]) -> None:
        pixel_format, width, height = shape
        self.rgba = ctx.texture((width, height), 4)
        raw_gl.allocate_rgba(self.rgba)
        configure_sampling(self.rgba)
        self.planes: list[moderngl.Texture] = []
        self.fbo: moderngl.Framebuffer | None = None
        if pixel_format != "rgba8":
            for plane_w, plane_h, components in plane_shapes(pixel_format, width, height):
                plane = ctx.texture((plane_w, plane_h), components)
                configure_sampling(plane)
                self.planes.append(plane)
            self.fbo = ctx.framebuffer(color_attachments=[self.rgba])

    def release(self) -> None:
        if self.fbo is not None:
            self.fbo.release()
            self.fbo = None
        for plane in self.planes:
            plane.release()
        self.planes = []
        self.rgba.release()


class SourceTexture:
    """One input's RGBA texture; YUV frames go through their plane textures and the conversion pass.

    Double-buffered: each new frame goes into the other of two texture sets, the one the previous
    frame's draws did not read. Writing a texture that llvmpipe still counts as used by an earlier
    batch of drawing makes the upload wait for the rasterization of everything flushed so far in this
    frame, which undoes the overlap of uploads with rasterization (``Renderer._compose``).
    """

    def __init__(self, ctx: moderngl.Context, yuv_pass: YuvInputPass) -> None:
        self._ctx = ctx
        self._yuv_pass = yuv_pass
        self._shape: tuple[str, int, int] | None = None
        self._serial: int | None = None
        self._sets: list[_TextureSet | None] = [None, None]
        self._current = 0  # the set holding the frame of ``_serial``
        self.premultiplied = False
        self.opaque = False
        self.uploads = 0

    @property
    def rgba(self) -> moderngl.Texture | None:
        """The texture holding the last frame uploaded (None before the first)."""
        current = self._sets[self._current]
        return None if current is None else current.rgba

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
            self._shape = shape
        self._current ^= 1
        target = self._sets[self._current]
        if target is None:
            target = self._sets[self._current] = _TextureSet(self._ctx, shape)
        self._serial = frame.serial
        self.premultiplied = frame.premultiplied or frame.pixel_format != "rgba8"
        self.opaque = frame.opaque or frame.pixel_format != "rgba8"
        data = as_buffer(frame.data)
        if frame.pixel_format == "rgba8":
            raw_gl.upload_rgba(target.rgba, data)
        else:
            view = memoryview(data).cast("B")
            offset = 0
            for plane in target.planes:
                size = plane.width * plane.height * plane.components
                plane.write(view[offset : offset + size])
                offset += size
            assert target.fbo is not None
            self._yuv_pass.convert(frame.pixel_format, target.planes, target.fbo, (frame.width, frame.height), frame.color_matrix)
        self.uploads += 1
        return True

    def _release_textures(self) -> None:
        for index, texture_set in enumerate(self._sets):
            if texture_set is not None:
                texture_set.release()
                self._sets[index] = None
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
