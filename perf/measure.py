"""Timing results and their two printed forms: the reference pull request's summary and one JSON line.

The summary is the form of streamkit PR 186's benchmark::

    wall-clock   : 1.534s  (min=1.300s  max=1.751s  σ=0.2259s)
    throughput   : 195.6 fps
    per-frame    : 5.11 ms/frame

Throughput is frames per iteration over the mean wall-clock time of an
iteration; σ is the sample standard deviation (0 for a single iteration).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Timing:
    """Wall-clock seconds of each iteration of one workload, ``frames`` frames per iteration."""

    name: str
    frames: int
    walls: list[float] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.walls)

    @property
    def stdev(self) -> float:
        return statistics.stdev(self.walls) if len(self.walls) > 1 else 0.0

    @property
    def fps(self) -> float:
        return self.frames / self.mean if self.walls and self.mean > 0 else 0.0

    @property
    def ms_per_frame(self) -> float:
        return 1000.0 * self.mean / self.frames if self.walls and self.frames else 0.0

    def summary(self) -> str:
        return (
            f"wall-clock   : {self.mean:.3f}s  (min={min(self.walls):.3f}s  max={max(self.walls):.3f}s  σ={self.stdev:.4f}s)\n"
            f"throughput   : {self.fps:.1f} fps\n"
            f"per-frame    : {self.ms_per_frame:.2f} ms/frame"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "iterations": len(self.walls),
            "wall_s": [round(w, 4) for w in self.walls],
            "wall_mean_s": round(self.mean, 4),
            "wall_min_s": round(min(self.walls), 4),
            "wall_max_s": round(max(self.walls), 4),
            "wall_stdev_s": round(self.stdev, 4),
            "fps": round(self.fps, 2),
            "ms_per_frame": round(self.ms_per_frame, 3),
        }


def ratios(ours: Timing, peer: Timing) -> list[float]:
    """Our fps over the peer's, per repetition (both ran interleaved, A B A B)."""
    return [round((ours.frames / a) / (peer.frames / b), 3) for a, b in zip(ours.walls, peer.walls, strict=False)]


def percentiles(samples: list[float], points: tuple[float, ...] = (50, 99)) -> dict[str, float | None]:
    """``{"p50": .., "p99": .., "max": ..}`` (nearest-rank, in the samples' unit); None when there are none."""
    keys = [f"p{int(p) if float(p).is_integer() else p}" for p in points]
    if not samples:
        return {**{key: None for key in keys}, "max": None, "count": 0}
    ordered = sorted(samples)
    out: dict[str, float | None] = {}
    for key, p in zip(keys, points, strict=False):
        rank = max(1, -(-len(ordered) * p // 100))  # ceil, nearest-rank definition
        out[key] = round(ordered[int(rank) - 1], 3)
    out["max"] = round(ordered[-1], 3)
    out["count"] = len(ordered)
    return out


def json_line(scenario: str, result: dict[str, Any]) -> str:
    """The machine-readable line every scenario prints last: ``BENCH {json}``."""
    return "BENCH " + json.dumps({"scenario": scenario, **result}, sort_keys=True, allow_nan=False)
