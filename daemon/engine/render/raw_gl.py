"""GL calls that moderngl does not make: RGBA textures in BGRA-ordered storage, their uploads and reads, glFlush, glBlendColor.

**Why BGRA-ordered storage.** Mesa's llvmpipe (22.x) has a *linear
rasterizer*: screen-aligned textured rectangles whose fragment shader is a
texture fetch times constants in [0, 1], blended or not, are drawn in 8-bit
fixed point spans instead of the general float pipeline, about twice as fast
per pixel (docs/RENDERING.md, "Speed on llvmpipe"). In that Mesa it only
takes B8G8R8A8 render targets and textures. Our frames are RGBA bytes, so
every RGBA texture of the renderer is allocated with BGRA storage and given
our RGBA bytes *as if* they were BGRA: a plain copy both ways, and in the
shaders' view red and blue are exchanged consistently everywhere. Layer
compositing (sampling, opacity, blending) treats the channels alike, so it
does not care; the shaders that convert colours (``yuv_to_rgba.glsl``,
``rgba_to_yuv.glsl``) swizzle, and a clear colour swaps red and blue
(:func:`stored_color`). Reading the target back as BGRA returns our RGBA
bytes unchanged. On a driver that stores such a texture as RGBA instead, the
results are the same (GL converts on upload and read), only slower.

**Why ctypes.** moderngl keeps the GIL for the whole of every call, and
llvmpipe finishes a frame's rasterization inside the read back. A ctypes call
releases the GIL, so the uploads and the read back here (where a frame's CPU
time goes) let the daemon's other Python threads run meanwhile.

The entry points come from ``eglGetProcAddress``: every context is an EGL
context (``gl_context``), and EGL's function pointers do not depend on the
context. Use them only on the render thread, with its context current.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache
from typing import Any

import moderngl
import numpy as np

GL_TEXTURE_2D = 0x0DE1
GL_TEXTURE0 = 0x84C0
GL_RGBA = 0x1908
GL_BGRA = 0x80E1
GL_UNSIGNED_BYTE = 0x1401
GL_PACK_ALIGNMENT = 0x0D05
GL_UNPACK_ALIGNMENT = 0x0CF5
GL_READ_FRAMEBUFFER = 0x8CA8
GL_PIXEL_PACK_BUFFER = 0x88EB
GL_CONSTANT_ALPHA = 0x8003  # blend factors moderngl has no names for (it passes any GLenum through)
GL_ONE_MINUS_CONSTANT_ALPHA = 0x8004

_uint, _int, _ptr, _float = ctypes.c_uint, ctypes.c_int, ctypes.c_void_p, ctypes.c_float
_SIGNATURES: dict[str, tuple[Any, ...]] = {
    "glActiveTexture": (_uint,),
    "glBindTexture": (_uint, _uint),
    "glTexImage2D": (_uint, _int, _int, _int, _int, _int, _uint, _uint, _ptr),
    "glTexSubImage2D": (_uint, _int, _int, _int, _int, _int, _uint, _uint, _ptr),
    "glPixelStorei": (_uint, _int),
    "glBindFramebuffer": (_uint, _uint),
    "glBindBuffer": (_uint, _uint),
    "glReadPixels": (_int, _int, _int, _int, _uint, _uint, _ptr),
    "glFlush": (),
    "glBlendColor": (_float, _float, _float, _float),
}

# A bytes object is filled in place right after it is made, before anything else can see it
# (what moderngl's own read does in C): saves copying a whole frame once more per read back.
_new_bytes = ctypes.pythonapi.PyBytes_FromStringAndSize
_new_bytes.restype = ctypes.py_object
_new_bytes.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t]
_bytes_address = ctypes.pythonapi.PyBytes_AsString
_bytes_address.restype = ctypes.c_void_p
_bytes_address.argtypes = [ctypes.py_object]


class RawGLError(RuntimeError):
    """An entry point is missing (not an EGL driver?) or a call was given the wrong amount of data."""


@cache
def _gl() -> dict[str, Any]:
    path = ctypes.util.find_library("EGL")
    if path is None:
        raise RawGLError("libEGL not found: the renderer needs an EGL context (gl_context.create_context)")
    egl = ctypes.CDLL(path)
    egl.eglGetProcAddress.restype = ctypes.c_void_p
    egl.eglGetProcAddress.argtypes = [ctypes.c_char_p]
    functions = {}
    for name, arguments in _SIGNATURES.items():
        address = egl.eglGetProcAddress(name.encode())
        if not address:
            raise RawGLError(f"eglGetProcAddress({name}) returned nothing")
        functions[name] = ctypes.CFUNCTYPE(None, *arguments)(address)
    return functions


def _bind(texture: moderngl.Texture) -> dict[str, Any]:
    gl = _gl()
    # The unit moderngl itself uses for uploads, so the units drawing binds are left alone.
    gl["glActiveTexture"](GL_TEXTURE0 + texture.ctx.default_texture_unit)
    gl["glBindTexture"](GL_TEXTURE_2D, texture.glo)
    return gl


def allocate_rgba(texture: moderngl.Texture) -> None:
    """Give a 4-component texture (made by moderngl) BGRA-ordered storage; its contents are undefined after."""
    if texture.components != 4:
        raise RawGLError(f"allocate_rgba: a 4-component texture is needed, got {texture.components}")
    width, height = texture.size
    _bind(texture)["glTexImage2D"](GL_TEXTURE_2D, 0, GL_RGBA, width, height, 0, GL_BGRA, GL_UNSIGNED_BYTE, None)


def upload_rgba(texture: moderngl.Texture, data: bytes | bytearray | memoryview | np.ndarray) -> None:
    """Write RGBA bytes (rows top to bottom, tightly packed) into a texture from ``allocate_rgba``."""
    pixels = np.ascontiguousarray(data) if isinstance(data, np.ndarray) else np.frombuffer(data, dtype=np.uint8)
    width, height = texture.size
    if pixels.nbytes != width * height * 4:
        raise RawGLError(f"upload_rgba: {pixels.nbytes} bytes for a {width}x{height} RGBA texture ({width * height * 4} needed)")
    gl = _bind(texture)
    gl["glPixelStorei"](GL_UNPACK_ALIGNMENT, 1)
    gl["glTexSubImage2D"](GL_TEXTURE_2D, 0, 0, 0, width, height, GL_BGRA, GL_UNSIGNED_BYTE, pixels.ctypes.data)


def read_rgba(framebuffer: moderngl.Framebuffer, width: int, height: int) -> bytes:
    """The RGBA bytes of colour attachment 0 (a texture from ``allocate_rgba``), waiting for the frame to finish."""
    nbytes = width * height * 4
    out = _new_bytes(None, nbytes)
    gl = _gl()
    gl["glBindFramebuffer"](GL_READ_FRAMEBUFFER, framebuffer.glo)
    gl["glPixelStorei"](GL_PACK_ALIGNMENT, 1)
    gl["glReadPixels"](0, 0, width, height, GL_BGRA, GL_UNSIGNED_BYTE, _bytes_address(out))
    return out


def read_rgba_into(framebuffer: moderngl.Framebuffer, width: int, height: int, buffer: moderngl.Buffer, offset: int) -> None:
    """Like ``read_rgba``, into a pixel pack buffer at ``offset``."""
    if offset < 0 or offset + width * height * 4 > buffer.size:
        raise RawGLError(f"read_rgba_into: {width}x{height} RGBA at offset {offset} overruns a {buffer.size}-byte buffer")
    gl = _gl()
    gl["glBindFramebuffer"](GL_READ_FRAMEBUFFER, framebuffer.glo)
    gl["glPixelStorei"](GL_PACK_ALIGNMENT, 1)
    gl["glBindBuffer"](GL_PIXEL_PACK_BUFFER, buffer.glo)
    try:
        gl["glReadPixels"](0, 0, width, height, GL_BGRA, GL_UNSIGNED_BYTE, offset)
    finally:
        gl["glBindBuffer"](GL_PIXEL_PACK_BUFFER, 0)


def flush() -> None:
    """Hand what was drawn so far to the rasterizer as a scene of its own (see Renderer.render)."""
    _gl()["glFlush"]()


def blend_color(r: float, g: float, b: float, a: float) -> None:
    """``glBlendColor`` (moderngl has no call for it): the constant of GL_CONSTANT_ALPHA blending."""
    _gl()["glBlendColor"](r, g, b, a)


def stored_color(r: float, g: float, b: float, a: float) -> tuple[float, float, float, float]:
    """A colour as the shaders see it in BGRA-ordered storage (red and blue exchanged), e.g. for a clear."""
    return (b, g, r, a)
