"""A compositor's render times per frame as histogram bucket counts: plain data for its node stats.

The control side turns them into the ``compositord_render_seconds`` histogram
of ``/metrics`` (``control/metrics.py``). Counting in the engine and sending
the counts keeps every frame's time in the histogram without an event per
frame, and the counts cross a process boundary as they are.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Upper bounds in milliseconds: a 60 fps frame is 16.7 ms, a 30 fps one 33.3 ms.
RENDER_MS_BOUNDS = (1.0, 2.5, 5.0, 10.0, 16.7, 25.0, 33.3, 50.0, 100.0, 250.0, 1000.0)


class RenderTimeHistogram:
    """Cumulative since the engine started: counts per bucket (a value equal to a bound counts in it)."""

    def __init__(self) -> None:
        self._bounds = np.asarray(RENDER_MS_BOUNDS)
        self.counts = np.zeros(len(RENDER_MS_BOUNDS) + 1, dtype=np.int64)  # the last bucket: above every bound
        self.sum_ms = 0.0

    def observe(self, samples_ms: np.ndarray) -> None:
        if samples_ms.size:
            self.counts += np.bincount(np.searchsorted(self._bounds, samples_ms, side="left"), minlength=self.counts.size)
            self.sum_ms += float(samples_ms.sum())

    def as_stats(self) -> dict[str, Any]:
        """``{"le_ms": bounds, "counts": per bucket (one more than bounds), "sum_ms": total}``."""
        return {"le_ms": list(RENDER_MS_BOUNDS), "counts": self.counts.tolist(), "sum_ms": round(self.sum_ms, 3)}
