"""Pixel conversions for sinks, on the sinks' own threads (never the render thread).

The compositor reads back RGBA8 (premultiplied), NV12 or I420 (limited range,
BT.601 or BT.709). Encoders and Y4M want planar 4:2:0; previews and windows
want RGB. Conversions between RGB and YUV go through libswscale (PyAV's
``VideoFrame.reformat``); NV12 <-> I420 is a plane shuffle in NumPy.
"""

from __future__ import annotations

import av
import numpy as np

from compositord.daemon.engine.render.frames import OutputFrame

# PyAV's names for the colour matrices of OutputFrame.color_matrix.
SWS_COLORSPACE = {"bt601": "itu601", "bt709": "itu709"}


def to_video_frame(frame: OutputFrame) -> av.VideoFrame:
    """The frame as a PyAV frame in its own pixel format (no conversion yet)."""
    if frame.pixel_format == "rgba8":
        return av.VideoFrame.from_ndarray(frame.as_array(), format="rgba")
    packed = np.frombuffer(frame.data, dtype=np.uint8).reshape(frame.height * 3 // 2, frame.width)
    return av.VideoFrame.from_ndarray(packed, format="nv12" if frame.pixel_format == "nv12" else "yuv420p")


def to_yuv420p(frame: OutputFrame) -> av.VideoFrame:
    """Planar 4:2:0 for an encoder (RGBA through libswscale with the frame's matrix)."""
    if frame.pixel_format == "i420":
        return to_video_frame(frame)
    if frame.pixel_format == "nv12":
        return av.VideoFrame.from_ndarray(_nv12_to_i420(frame).reshape(frame.height * 3 // 2, frame.width), format="yuv420p")
    colorspace = SWS_COLORSPACE[frame.color_matrix]
    return to_video_frame(frame).reformat(format="yuv420p", src_colorspace=colorspace, dst_colorspace=colorspace)


def i420_bytes(frame: OutputFrame) -> bytes:
    """Y, U, V planes tightly packed (what a YUV4MPEG2 ``FRAME`` holds)."""
    if frame.pixel_format == "i420":
        return frame.data
    if frame.pixel_format == "nv12":
        return _nv12_to_i420(frame).tobytes()
    return to_yuv420p(frame).to_ndarray().tobytes()  # to_ndarray drops swscale's row padding


def to_rgb(frame: OutputFrame, width: int | None = None, height: int | None = None) -> np.ndarray:
    """(h, w, 3) uint8 RGB, scaled to ``width`` x ``height`` when given (libswscale)."""
    width = width or frame.width
    height = height or frame.height
    if frame.pixel_format == "rgba8" and (width, height) == (frame.width, frame.height):
        return np.ascontiguousarray(frame.as_array()[:, :, :3])
    colorspace = SWS_COLORSPACE[frame.color_matrix]
    converted = to_video_frame(frame).reformat(
        width=width, height=height, format="rgb24", src_colorspace=colorspace, dst_colorspace=colorspace, interpolation="AREA"
    )
    return converted.to_ndarray()


def _nv12_to_i420(frame: OutputFrame) -> np.ndarray:
    luma = frame.plane(0)
    uv = frame.plane(1)
    return np.concatenate(
        (luma.reshape(-1), np.ascontiguousarray(uv[:, :, 0]).reshape(-1), np.ascontiguousarray(uv[:, :, 1]).reshape(-1))
    )
