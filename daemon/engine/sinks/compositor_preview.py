"""Ephemeral previews of a compositor's output: JPEG thumbnails for a client that watches it (the web panel).

Unlike a ``sink::preview`` node, a compositor preview is no part of the
pipeline: the control side starts one with ``api.StartCompositorPreview``
while a client subscribes, and stops it when the last subscriber goes. The
render thread owns :class:`CompositorPreviews` and calls it after each frame;
each preview encodes on its own worker thread (the ``Sink`` machinery: a
one-frame slot, latest wins, so a slow encoder skips frames and never holds
up the render loop).

Latency matters more here than in a sink: the frame shown should be as fresh
as possible. So the rate cap is applied where frames are offered, on the
render thread: a frame is handed over only when the preview is due, and the
worker encodes it at once instead of sleeping with a frame waiting in its slot.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from compositord.daemon.engine.api import PreviewImage, StartCompositorPreview
from compositord.daemon.engine.render.frames import OutputFrame
from compositord.daemon.engine.sinks.base import ErrorLatch, Sink, SinkFrame
from compositord.daemon.engine.sinks.preview import encode_thumbnail

log = logging.getLogger(__name__)

# A frame up to this much earlier than the preview's next due time still counts as due: frames arrive
# with a little jitter, and a preview at the compositor's own rate must not skip every other frame.
DUE_TOLERANCE_S = 0.005

# (preview id, compositor node id, thumbnail, wall clock when the frame was rendered), from the worker thread.
ReportImage = Callable[[str, str, PreviewImage, float], None]


@dataclass(frozen=True)
class RenderedFrame(SinkFrame):
    rendered_at: float = 0.0  # time.time() when the render loop finished the frame


class CompositorPreview(Sink):
    kind = "compositor-preview"
    queue_capacity = 1
    keep_latest = True

    def __init__(self, command: StartCompositorPreview, report: ReportImage) -> None:
        latch = ErrorLatch(command.node_id, self._log_error)
        super().__init__(command.node_id, {}, latch)
        self.preview_id = command.preview_id
        self.max_width = command.max_width
        self.quality = command.quality
        self.interval = 1.0 / command.max_fps
        self._report = report
        self._next_due = 0.0  # render thread

    def due(self, now: float) -> bool:
        """Whether a frame finished at ``now`` (monotonic) should be encoded; render thread only."""
        if now < self._next_due - DUE_TOLERANCE_S:
            return False
        # Keep the schedule when on time (no drift); restart it after a gap (no burst to catch up).
        late = now - self._next_due
        self._next_due = self._next_due + self.interval if late < self.interval else now + self.interval
        return True

    def open(self, first: SinkFrame) -> None:
        pass

    def write(self, item: SinkFrame) -> None:
        image = encode_thumbnail(item, self.max_width, self.quality)
        rendered_at = item.rendered_at if isinstance(item, RenderedFrame) else image.timestamp
        self._report(self.preview_id, self.node_id, image, rendered_at)

    def _log_error(self, node_id: str, message: str | None) -> None:
        # A preview's failure is the watching client's loss, not the compositor's error state.
        if message is not None:
            log.warning("compositor preview %s of %s stopped: %s", self.preview_id, node_id, message)


class CompositorPreviews:
    """The compositor previews of one render loop (render thread only)."""

    def __init__(self, report: ReportImage) -> None:
        self._report = report
        self._previews: dict[str, CompositorPreview] = {}
        self._retiring: list[CompositorPreview] = []

    def start(self, command: StartCompositorPreview) -> None:
        self.stop(command.preview_id)
        preview = CompositorPreview(command, self._report)
        preview.start()
        self._previews[command.preview_id] = preview

    def stop(self, preview_id: str) -> None:
        preview = self._previews.pop(preview_id, None)
        if preview is not None:
            preview.close(wait=False)
            self._retiring.append(preview)
        self._retiring = [p for p in self._retiring if not p.close()]

    def retain(self, compositor_ids: Iterable[str]) -> None:
        """Stop the previews of compositors that are gone."""
        keep = set(compositor_ids)
        for preview_id in [p for p, preview in self._previews.items() if preview.node_id not in keep]:
            self.stop(preview_id)

    def deliver(self, node_id: str, frame: OutputFrame, media_time: float, fps: int) -> None:
        if not self._previews:
            return
        now, rendered_at = time.monotonic(), time.time()
        for preview in self._previews.values():
            if preview.node_id == node_id and preview.due(now):
                preview.offer(RenderedFrame(frame, media_time, fps, rendered_at=rendered_at))

    def close_all(self, timeout: float) -> None:
        previews = [*self._previews.values(), *self._retiring]
        self._previews.clear()
        self._retiring.clear()
        for preview in previews:
            preview.close(wait=False)
        deadline = time.monotonic() + timeout
        for preview in previews:
            preview.join(max(0.0, deadline - time.monotonic()))
