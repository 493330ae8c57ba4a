"""Handoffs between a producer thread and the render thread: the one-slot "latest frame", and frames
decoded ahead with the time each is due (``DueFrameQueue``).

A producer (a decoder thread, or the trio thread receiving pushed frames)
``put``s frames; the render thread ``take``s the newest one at the start of a
frame. Neither side ever waits for the other longer than a lock held for two
assignments: a frame that was not taken before the next one arrived is
replaced and counted as dropped. The bound is one frame by construction.
"""

from __future__ import annotations

import threading
from collections import deque
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


class DueFrameQueue(Generic[T]):
    """Frames decoded ahead of time, each with the ``time.monotonic()`` time it is due.

    The producer ``put``s frames as soon as they are decoded (it decides how far ahead it runs); the
    render thread ``take``s, at each output frame, the newest frame due by then: the picture changes on
    the render thread's own tick, however late the producer's thread wakes. A frame overtaken before it
    was taken is dropped (counted). At most ``capacity`` frames wait; a put into a full queue drops the
    oldest (counted), so a queue nobody takes from costs ``capacity`` frames of memory at most.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity: must be at least 1, got {capacity}")
        self._capacity = capacity
        self._lock = threading.Lock()
        self._items: deque[tuple[float, T]] = deque()
        self.offered = 0
        self.dropped = 0

    def put(self, due: float, item: T) -> None:
        with self._lock:
            if len(self._items) >= self._capacity:
                self._items.popleft()
                self.dropped += 1
            self._items.append((due, item))
            self.offered += 1

    def take(self, now: float) -> T | None:
        """The newest item due at ``now`` (older due ones are dropped), or None when none is due."""
        with self._lock:
            newest: T | None = None
            while self._items and self._items[0][0] <= now:
                if newest is not None:
                    self.dropped += 1
                newest = self._items.popleft()[1]
            return newest

    def clear(self) -> None:
        """Forget what waits without counting it (its producer started over)."""
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
