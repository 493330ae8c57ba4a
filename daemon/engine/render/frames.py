"""Frames that cross the renderer's boundary: sources in, the composited output out.

Pixel rows run top to bottom in every format. Planar layouts are tightly
packed (no row padding): NV12 is the Y plane (w*h) then interleaved UV
(2 * ceil(w/2) * ceil(h/2)); I420 is Y, then U, then V (ceil(w/2) * ceil(h/2)
each).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal, cast

import numpy as np

PixelFormat = Literal["rgba8", "nv12", "i420"]
ColorMatrix = Literal["bt601", "bt709"]
PIXEL_FORMATS: tuple[str, ...] = ("rgba8", "nv12", "i420")
COLOR_MATRICES: tuple[str, ...] = ("bt601", "bt709")
# (Kr, Kb) of each colour matrix; shaders/color.glsl holds the same numbers for the GPU side.
LUMA_COEFFICIENTS: dict[str, tuple[float, float]] = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}


def as_pixel_format(name: str) -> PixelFormat:
    """``name`` as a :data:`PixelFormat`, for a format that arrives as a plain string; ValueError when it names none."""
    if name not in PIXEL_FORMATS:
        raise ValueError(f"unknown pixel format {name!r} (expected one of {', '.join(PIXEL_FORMATS)})")
    return cast(PixelFormat, name)


def chroma_size(width: int, height: int) -> tuple[int, int]:
    return ((width + 1) // 2, (height + 1) // 2)


def frame_byte_size(pixel_format: str, width: int, height: int) -> int:
    if pixel_format == "rgba8":
        return width * height * 4
    if pixel_format in ("nv12", "i420"):
        chroma_w, chroma_h = chroma_size(width, height)
        return width * height + 2 * chroma_w * chroma_h
    raise ValueError(f"unknown pixel format {pixel_format!r} (expected one of {', '.join(PIXEL_FORMATS)})")


@dataclass(frozen=True)
class SourceFrame:
    """One frame of an input.

    ``serial`` must change whenever the pixels change: the renderer uploads a
    source only when its serial differs from the one it last uploaded.
    ``opaque`` promises every alpha is 255 (lets the renderer skip blending
    and write a full-frame bottom layer straight into the target).
    ``premultiplied`` says the RGBA colour is already multiplied by alpha.
    ``color_matrix`` is how YUV formats are to be read (limited range).
    """

    pixel_format: PixelFormat
    width: int
    height: int
    data: bytes | np.ndarray
    serial: int
    opaque: bool = False
    premultiplied: bool = False
    color_matrix: ColorMatrix = "bt709"

    def __post_init__(self) -> None:
        if self.pixel_format not in PIXEL_FORMATS:
            raise ValueError(f"SourceFrame.pixel_format: {self.pixel_format!r} is not one of {', '.join(PIXEL_FORMATS)}")
        if self.color_matrix not in COLOR_MATRICES:
            raise ValueError(f"SourceFrame.color_matrix: {self.color_matrix!r} is not one of {', '.join(COLOR_MATRICES)}")
        if not (isinstance(self.width, int) and isinstance(self.height, int)) or self.width <= 0 or self.height <= 0:
            raise ValueError(f"SourceFrame size must be positive integers, got {self.width}x{self.height}")
        expected = frame_byte_size(self.pixel_format, self.width, self.height)
        actual = self.data.nbytes if isinstance(self.data, np.ndarray) else len(self.data)
        if actual != expected:
            raise ValueError(
                f"SourceFrame.data: {actual} bytes, but {self.pixel_format} {self.width}x{self.height} needs {expected}"
            )


@dataclass(frozen=True)
class TextureFrame:
    """Another compositor's picture of this frame, drawn from its texture with no read back (nested compositors).

    ``texture`` (a ``moderngl.Texture``) is canvas-sized premultiplied RGBA with
    BGRA-ordered storage (``render/raw_gl``), owned by that compositor's
    renderer: valid until its next frame, and only on the render thread.
    ``opaque`` promises every alpha is 255 (its background is opaque).
    """

    texture: Any
    width: int
    height: int
    opaque: bool = False
    framebuffer: Any = None  # the texture's framebuffer (a ``moderngl.Framebuffer``), to copy it whole with a blit
    pixel_format: ClassVar[str] = "texture"
    premultiplied: ClassVar[bool] = True


# What the renderer takes for one input pin.
InputFrame = SourceFrame | TextureFrame


@dataclass(frozen=True)
class OutputFrame:
    """The composited frame as read back: ``data`` holds the planes described above.

    RGBA output is premultiplied alpha; wherever the background is opaque the
    result is opaque and premultiplied equals straight alpha.
    """

    pixel_format: PixelFormat
    width: int
    height: int
    data: bytes
    color_matrix: ColorMatrix = "bt709"
    frame_number: int = 0

    def as_array(self) -> np.ndarray:
        """RGBA as (h, w, 4) uint8; YUV as the flat byte array (use ``plane``)."""
        raw = np.frombuffer(self.data, dtype=np.uint8)
        if self.pixel_format == "rgba8":
            return raw.reshape(self.height, self.width, 4)
        return raw

    def plane(self, index: int) -> np.ndarray:
        """Plane ``index`` as a 2-D array (NV12's UV plane: (h/2, w/2, 2))."""
        raw = np.frombuffer(self.data, dtype=np.uint8)
        if self.pixel_format == "rgba8":
            if index != 0:
                raise IndexError("rgba8 has one plane")
            return raw.reshape(self.height, self.width, 4)
        chroma_w, chroma_h = chroma_size(self.width, self.height)
        luma = self.width * self.height
        if index == 0:
            return raw[:luma].reshape(self.height, self.width)
        if self.pixel_format == "nv12":
            if index != 1:
                raise IndexError("nv12 has two planes")
            return raw[luma:].reshape(chroma_h, chroma_w, 2)
        if index not in (1, 2):
            raise IndexError("i420 has three planes")
        start = luma + (index - 1) * chroma_w * chroma_h
        return raw[start : start + chroma_w * chroma_h].reshape(chroma_h, chroma_w)
