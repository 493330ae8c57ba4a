"""The one-slot "latest frame" handoff between a producer thread and the render thread.

A producer (a decoder thread, or the trio thread receiving pushed frames)
``put``s frames; the render thread ``take``s the newest one at the start of a
frame. Neither side ever waits for the other longer than a lock held for two
assignments: a frame that was not taken before the next one arrived is
replaced and counted as dropped. The bound is one frame by construction.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestFrameSlot(Generic[T]):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._item: T | None = None
        self.offered = 0  # every put
        self.dropped = 0  # puts replaced before the render thread took them

    def put(self, item: T) -> None:
        with self._lock:
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self.offered += 1

    def take(self) -> T | None:
        """The newest item not taken yet, or None."""
        with self._lock:
            item, self._item = self._item, None
            return item

    def clear(self) -> None:
        """Forget an untaken item without counting it (its producer started over)."""
        with self._lock:
            self._item = None
