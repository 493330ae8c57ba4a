"""A ``video::capture`` node: an X11 screen region (FFmpeg's ``x11grab``) or a V4L2 camera, through PyAV.

The device is opened on the node's own receiver thread (``live_av``), with a
timeout; a missing or busy device puts the node in the error state and is
tried again with backoff, never on the render thread. Frames are paced by the
device's timestamps (``sources.pacing``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from compositord.daemon.engine.sources.live_av import AVInput, LiveAVSource

X11 = "x11"
V4L2 = "v4l2"


def describe_capture(params: Mapping[str, Any]) -> AVInput:
    """The PyAV open of the capture the params name (ValueError for params the schema would refuse)."""
    device_kind = str(params.get("source", X11))
    width, height = int(params.get("width", 1280)), int(params.get("height", 720))
    rate = f"{float(params.get('frame_rate', 30.0)):g}"
    if device_kind == X11:
        display = str(params.get("display", ":0"))
        x, y = int(params.get("x", 0)), int(params.get("y", 0))
        options = {
            "video_size": f"{width}x{height}",
            "framerate": rate,
            "draw_mouse": "1" if params.get("draw_mouse", True) else "0",
        }
        return AVInput(f"{display}+{x},{y}", "x11grab", options, label=f"x11 {display}+{x},{y} {width}x{height}")
    if device_kind == V4L2:
        device = str(params.get("device", "/dev/video0"))
        options = {"video_size": f"{width}x{height}", "framerate": rate}
        pixel_format = str(params.get("pixel_format", "auto"))
        if pixel_format != "auto":
            options["input_format"] = pixel_format
        return AVInput(device, "video4linux2", options, label=device)
    raise ValueError(f"source: {device_kind!r} is not one of {X11}, {V4L2}")


class CaptureSource(LiveAVSource):
    def __init__(self, params: Mapping[str, Any]) -> None:
        super().__init__(params, describe_capture, name="capture")
