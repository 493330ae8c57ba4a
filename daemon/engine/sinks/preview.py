"""``sink::preview``: JPEG thumbnails of the output for control clients.

The render thread hands over frames through a one-slot, latest-wins handoff;
the sink's worker encodes (libswscale downscale to ``max_width``, Pillow JPEG
at ``quality``) at most ``max_fps`` times a second, off the render thread and
off the trio thread. The latest thumbnail is kept for ``getpreview`` (so a
request is answered at once with a thumbnail at most ``1 / max_fps`` old) and
handed to ``on_image(node_id, image)`` for ``subscribepreview`` subscribers.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any

from PIL import Image

from compositord.daemon.engine.api import PreviewImage
from compositord.daemon.engine.sinks import convert
from compositord.daemon.engine.sinks.base import Sink, SinkFrame


def thumbnail_size(width: int, height: int, max_width: int) -> tuple[int, int]:
    if width <= max_width:
        return width, height
    return max_width, max(1, round(height * max_width / width))


def encode_thumbnail(item: SinkFrame, max_width: int, quality: int) -> PreviewImage:
    """A JPEG of ``item``'s frame, at most ``max_width`` wide (aspect kept)."""
    frame = item.frame
    width, height = thumbnail_size(frame.width, frame.height, max_width)
    rgb = convert.to_rgb(frame, width, height)
    buffer = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buffer, format="JPEG", quality=quality)
    return PreviewImage(buffer.getvalue(), width, height, frame.frame_number, item.media_time, time.time())


class PreviewSink(Sink):
    kind = "sink::preview"
    queue_capacity = 1
    keep_latest = True

    def __init__(self, *args: Any, on_image: Callable[[str, PreviewImage], None] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_image = on_image
        self.latest: PreviewImage | None = None  # replaced whole; any thread may read it

    def open(self, first: SinkFrame) -> None:
        pass

    def write(self, item: SinkFrame) -> None:
        started = time.monotonic()
        image = encode_thumbnail(item, int(self.params.get("max_width", 320)), int(self.params.get("quality", 75)))
        self.latest = image
        if self._on_image is not None:
            self._on_image(self.node_id, image)
        # The rate cap: frames that arrive meanwhile replace each other in the one slot.
        interval = 1.0 / float(self.params.get("max_fps", 2.0))
        self.sleep_unless_closed(interval - (time.monotonic() - started))
