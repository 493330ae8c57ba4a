"""A ``video::push`` node: frames a client sends as binary WebSocket messages (PROTOCOL.md section 6).

The trio thread parses and checks each message (``protocol.frames``) and hands
it to the engine as an ``api.PushedFrame`` (``Engine.push_frame``); the render
loop makes a :class:`SourceFrame` of it (:func:`source_frame_from_pushed`) and
pushes that into the node's :class:`FramePacer` (in :class:`PushInlets`) with
the frame's ``pts_us``. The render thread's :class:`PushSource` takes, at each
output frame, the newest frame whose time has come: frames keep the spacing
their ``pts_us`` gives them (a burst that arrived together is spread out
again), frames that arrive faster than the compositor renders are dropped and
an output frame with nothing new repeats the last one, both counted
(``sources.pacing``). With no added latency a frame is due as soon as it
arrives, so a client that stamps every frame alike gets "the newest wins".
Before the first frame the node shows nothing; afterwards it keeps its last
good frame until a newer one arrives.

RGBA8 frames are straight (not premultiplied) alpha; NV12 / I420 are read
with the BT.709 matrix, limited range.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from compositord.daemon.engine.api import PushedFrame
from compositord.daemon.engine.audio.push import PushedAudioInlet
from compositord.daemon.engine.render.frames import SourceFrame, as_pixel_format
from compositord.daemon.engine.sources.pacing import FramePacer

_serials = itertools.count(1)
PUSH_LATENCY_S = 0.0  # a pushed frame is due on arrival; its pts only spaces frames that arrive together


def source_frame_from_pushed(frame: PushedFrame) -> SourceFrame:
    """A checked pushed frame as a SourceFrame (no copy: a view of its bytes)."""
    pixels = np.frombuffer(frame.data, dtype=np.uint8)
    return SourceFrame(as_pixel_format(frame.pixel_format), frame.width, frame.height, pixels, next(_serials))


class PushInlets:
    """Per push node, the pacer its frames wait in (``video::push``) or the inlet its sound waits in
    (``audio::push``, ``audio.push``); shared by the loop's inbox (push) and the render thread (take)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slots: dict[str, FramePacer[SourceFrame]] = {}
        self._audio: dict[str, PushedAudioInlet] = {}
        self._closed = False

    def slot(self, node_id: str) -> FramePacer[SourceFrame]:
        """The node's pacer, made on first use (a frame may arrive before the render thread made the source)."""
        with self._lock:
            found = self._slots.get(node_id)
            if found is None:
                found = self._slots[node_id] = FramePacer(latency_s=PUSH_LATENCY_S)
            return found

    def audio(self, node_id: str) -> PushedAudioInlet | None:
        """The node's audio inlet, made on first use; None once the loop has ended (pushed audio is dropped)."""
        with self._lock:
            if self._closed:
                return None
            found = self._audio.get(node_id)
            if found is None:
                found = self._audio[node_id] = PushedAudioInlet(node_id)
            return found

    def existing_audio(self, node_id: str) -> PushedAudioInlet | None:
        with self._lock:
            return self._audio.get(node_id)

    def retain(self, node_ids: Iterable[str]) -> None:
        """Drop the slots and inlets of nodes no longer in the pipeline (bounds the maps by the push nodes there are)."""
        keep = set(node_ids)
        with self._lock:
            for node_id in [n for n in self._slots if n not in keep]:
                del self._slots[node_id]
            gone = [self._audio.pop(n) for n in [n for n in self._audio if n not in keep]]
        for inlet in gone:
            inlet.close()

    def close(self, timeout: float) -> None:
        """The loop ends: stop every audio converter (each waited for up to ``timeout``)."""
        with self._lock:
            self._closed = True
            inlets, self._audio = list(self._audio.values()), {}
        for inlet in inlets:
            inlet.close(timeout)


class PushSource:
    """Render thread side of one push node."""

    def __init__(self, params: Mapping[str, Any], slot: FramePacer[SourceFrame]) -> None:
        self._slot = slot
        self._taken_at: float | None = None
        self._frame: SourceFrame | None = None
        self._mismatched = 0
        self.configure(params)

    def configure(self, params: Mapping[str, Any]) -> None:
        shape = (str(params.get("pixel_format", "rgba8")), int(params.get("width", 1280)), int(params.get("height", 720)))
        if getattr(self, "_shape", None) != shape and self._frame is not None:
            self._frame = None  # a frame of the old shape is not what the node now promises
        self._shape = shape

    def frame(self, t: float = 0.0) -> SourceFrame | None:
        if t == self._taken_at:
            return self._frame  # a second compositor reading this input in the same output frame
        self._taken_at = t
        newest = self._slot.take()
        if newest is not None:
            if (newest.pixel_format, newest.width, newest.height) == self._shape:
                self._frame = newest
            else:
                self._mismatched += 1  # checked against older params on its way in
        return self._frame

    def stats(self) -> dict[str, Any]:
        paced = self._slot.stats()
        return {**paced, "frames_dropped": paced["frames_dropped"] + self._mismatched}
