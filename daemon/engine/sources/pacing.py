"""Live frames, stamped on their source's clock, shown on the output clock.

A live input (a screen, a camera, a network stream, frames a client pushes)
runs on a clock of its own: its timestamps (``pts``, seconds) advance at the
rate its device or peer thinks is right, which is never quite the output
loop's rate. :class:`FramePacer` sits between the producer thread and the
render thread:

- the producer ``push``es each frame with its pts; the pacer maps pts onto the
  local monotonic clock (``due = pts + offset``) so frames keep the spacing
  their source gave them, ``latency_s`` behind the newest arrival (jitter
  room);
- the offset follows the source's clock slowly (a fraction ``SLEW`` of the
  error at each frame), so a source clock that runs fast or slow against the
  local one never builds up delay nor starves; a jump (a reconnect, a pts
  wrap, a paused peer) further than ``resync_s`` re-anchors at once (counted
  as ``resyncs``);
- the render thread ``take``s at each output frame the newest frame that is
  due. A frame overtaken before it was shown is **dropped**; an output frame
  with nothing new to show **repeats** the last one. When the source is
  faster than the output the surplus is dropped, when it is slower the gap
  is filled by repeats: that is the drift correction, counted in stats.

The queue is bounded (``capacity`` frames); a push into a full queue drops
the oldest frame (counted as dropped), so a stalled render thread costs
memory for ``capacity`` frames at most.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

SLEW = 0.02  # fraction of the offset error corrected per frame: ~50 frames to follow a clock change, deaf to one frame's jitter
DEFAULT_CAPACITY = 8
DEFAULT_LATENCY_S = 0.05
DEFAULT_RESYNC_S = 0.5
HOLD_DECAY_PER_S = 0.002  # the delay late sound added shrinks this fast (s/s) while the sound has room


class FramePacer(Generic[T]):
    def __init__(
        self,
        *,
        capacity: int = DEFAULT_CAPACITY,
        latency_s: float = DEFAULT_LATENCY_S,
        resync_s: float = DEFAULT_RESYNC_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity: must be at least 1, got {capacity}")
        self._clock = clock
        self._capacity = capacity
        self._latency_s = latency_s
        self._resync_s = resync_s
        self._lock = threading.Lock()
        self._queue: deque[tuple[float, T]] = deque()  # (due on the local clock, frame), due ascending
        self._offset: float | None = None  # local seconds minus source seconds, plus the latency
        self._last_pts: float | None = None
        self._shown_once = False
        self.frames_received = 0
        self.frames_dropped = 0
        self.frames_repeated = 0
        self.resyncs = 0
        self.holds = 0  # times hold_for made the mapping later
        self._extra_s = 0.0  # added to the latency for sound that arrives later than its pictures
        self._last_hold: float | None = None

    @property
    def latency_s(self) -> float:
        return self._latency_s

    def set_latency(self, latency_s: float) -> None:
        with self._lock:
            if self._offset is not None:
                self._offset += latency_s - self._latency_s
            self._latency_s = latency_s

    def hold_for(self, pts: float, margin_s: float) -> None:
        """Something else stamped ``pts`` on the source's clock arrived now (a live input's sound, which
        its sender may deliver later than the pictures it goes with): keep the mapping late enough that it
        is due no sooner than ``margin_s`` from now. The shortfall is added at once to the mapping and to
        ``extra_s``, a delay the frames' own correction then keeps (so sound and pictures stay together);
        ``extra_s`` comes back down by ``HOLD_DECAY_PER_S`` while the sound arrives with room to spare."""
        now = self._clock()
        with self._lock:
            if self._offset is None:
                return
            room = self._offset - (now - pts + margin_s)
            if room < 0:
                self._offset -= room
                self._extra_s -= room
                self.holds += 1
            elif self._extra_s > 0 and self._last_hold is not None:
                self._extra_s = max(0.0, self._extra_s - min(room, HOLD_DECAY_PER_S * (now - self._last_hold)))
            self._last_hold = now

    @property
    def extra_s(self) -> float:
        """The delay late sound added to ``latency_s``."""
        with self._lock:
            return self._extra_s

    def due_time(self, pts: float) -> float | None:
        """When something stamped ``pts`` on the source's clock is due on the local clock (the sound of a
        live input keeps in step with its pictures this way); None before the first frame anchors the clock."""
        with self._lock:
            return None if self._offset is None else pts + self._offset

    # ------------------------------------------------------------------ producer thread

    def lost(self) -> None:
        """A frame that arrived but was overtaken on its way here (a newer one took its place before it could be
        read): counted as received and dropped, as one overtaken in this queue is."""
        with self._lock:
            self.frames_received += 1
            self.frames_dropped += 1

    def push(self, frame: T, pts: float) -> None:
        """A frame stamped ``pts`` seconds on its source's clock, arriving now."""
        now = self._clock()
        with self._lock:
            self.frames_received += 1
            # The offset that shows this frame latency_s (plus the late sound's extra) after its arrival.
            wanted = now - pts + self._latency_s + self._extra_s
            jumped = self._last_pts is not None and not (0.0 <= pts - self._last_pts <= self._resync_s)
            if self._offset is None or jumped or abs(wanted - self._offset) > self._resync_s:
                if self._offset is not None:
                    self.resyncs += 1
                self._offset = wanted
                # Frames queued on the old anchor would come out of order against the new one: show the newest.
                while len(self._queue) > 1:
                    self._queue.popleft()
                    self.frames_dropped += 1
                if self._queue:
                    self._queue[0] = (min(self._queue[0][0], now), self._queue[0][1])
            else:
                self._offset += (wanted - self._offset) * SLEW
            self._last_pts = pts
            due = pts + self._offset
            if self._queue and due < self._queue[-1][0]:
                due = self._queue[-1][0]  # never before a frame queued earlier
            if len(self._queue) >= self._capacity:
                self._queue.popleft()
                self.frames_dropped += 1
            self._queue.append((due, frame))

    def reset(self) -> None:
        """The source starts over (a reconnect, new params): forget the anchor and what waits."""
        with self._lock:
            self._queue.clear()
            self._offset = None
            self._last_pts = None
            self._extra_s = 0.0
            self._last_hold = None

    # ------------------------------------------------------------------ render thread

    def take(self) -> T | None:
        """The newest frame due now (older due ones are dropped); None when nothing new is due (a repeat)."""
        now = self._clock()
        with self._lock:
            newest: T | None = None
            while self._queue and self._queue[0][0] <= now:
                if newest is not None:
                    self.frames_dropped += 1
                newest = self._queue.popleft()[1]
            if newest is None:
                if self._shown_once:
                    self.frames_repeated += 1
                return None
            self._shown_once = True
            return newest

    def queued(self) -> int:
        with self._lock:
            return len(self._queue)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "frames_received": self.frames_received,
                "frames_dropped": self.frames_dropped,
                "frames_repeated": self.frames_repeated,
                "resyncs": self.resyncs,
            }
