"""Level meters: peak and RMS in dBFS per channel, over the sound seen since the last reading.

The mixer feeds a :class:`LevelMeter` every block it mixes (cheap: a max and
a sum of squares per channel); the render loop reads and restarts it when it
sends the compositor's stats (10 times a second), so each reading covers the
sound of the last tenth of a second or so, and a short peak between two
readings is never missed.

dBFS is ``20 * log10(x)`` with 1.0 as full scale, for both: a full-scale sine
reads peak 0.0 and RMS -3.0. Silence has no finite level; it reads
:data:`FLOOR_DBFS` (JSON has no -inf), as does anything quieter.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

FLOOR_DBFS = -120.0


def to_dbfs(amplitude: float) -> float:
    """``amplitude`` (1.0: full scale) in dBFS, rounded to 0.01 dB; :data:`FLOOR_DBFS` at or below it."""
    if amplitude <= 0.0:
        return FLOOR_DBFS
    return round(max(FLOOR_DBFS, 20.0 * math.log10(amplitude)), 2)


class LevelMeter:
    """Peak and RMS per channel of the blocks fed since the last :meth:`reading`."""

    def __init__(self, channels: int) -> None:
        self._restart(channels)

    def _restart(self, channels: int) -> None:
        self.channels = channels
        self._peak = np.zeros(channels, dtype=np.float64)
        self._sum_squares = np.zeros(channels, dtype=np.float64)
        self._count = 0

    def feed(self, samples: np.ndarray) -> None:
        """``samples``: ``(count, channels)``."""
        if samples.shape[0] == 0:
            return
        if samples.shape[1] != self.channels:
            # The layout changed (a compositor switched to mono): start over in the new one.
            self._restart(samples.shape[1])
        # Channels as contiguous rows: numpy reduces along a row ten times faster than down a column.
        planar = np.ascontiguousarray(samples.T)
        np.maximum(self._peak, np.abs(planar).max(axis=1), out=self._peak)
        self._sum_squares += np.einsum("ij,ij->i", planar, planar)  # float32 within a block, float64 across
        self._count += samples.shape[0]

    @property
    def fed(self) -> bool:
        return self._count > 0

    def reading(self) -> dict[str, Any]:
        """``{"peak_dbfs": [...], "rms_dbfs": [...]}`` (one value per channel); restarts the meter."""
        count = max(1, self._count)
        result = {
            "peak_dbfs": [to_dbfs(float(peak)) for peak in self._peak],
            "rms_dbfs": [to_dbfs(math.sqrt(float(total) / count)) for total in self._sum_squares],
        }
        self._restart(self.channels)
        return result
