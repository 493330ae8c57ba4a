"""Live-like inputs for the benchmarks: a short cycle of distinct frames, a new serial every frame.

Live video changes every frame, so every benchmark source does too: each
source cycles through ``CYCLE`` pre-made frames (SMPTE bars with a white bar
at a different place in each) and hands out a new serial each time, so the
renderer uploads every frame. Making the frames up front keeps pattern
generation out of the measurement; the peers (FFmpeg, GStreamer) read the
same frames from raw files in /dev/shm (``write_raw_cycle``), one read per
frame, so neither side pays for generating a pattern.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from pathlib import Path

import numpy as np

from compositord.daemon.engine.render.frames import PixelFormat, SourceFrame
from compositord.daemon.engine.sources.colorbars import ramp, smpte_bars

CYCLE = 8
_serials = itertools.count(1_000_000_000)  # far from the colorbars source's serials


def rgba_cycle(width: int, height: int, *, pattern: str = "smpte", count: int = CYCLE) -> list[np.ndarray]:
    base = smpte_bars(width, height) if pattern == "smpte" else ramp(width, height)
    frames = []
    bar = max(2, width // 40)
    for index in range(count):
        image = base.copy()
        start = (index * width) // count
        image[:, start : start + bar, :3] = 255
        frames.append(image)
    return frames


def rgba_to_nv12(image: np.ndarray) -> np.ndarray:
    """BT.709 limited range, chroma averaged over each 2x2 block; flat uint8 (w*h*3/2)."""
    rgb = image[..., :3].astype(np.float32) / 255.0
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 0.2126 * r + 0.7152 * g + 0.0722 * b
    cb = (b - y) / 1.8556
    cr = (r - y) / 1.5748
    height, width = y.shape
    luma = np.clip(np.rint(16 + 219 * y), 0, 255).astype(np.uint8)

    def pool(plane: np.ndarray) -> np.ndarray:
        return plane.reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3))

    chroma = np.empty((height // 2, width // 2, 2), dtype=np.uint8)
    chroma[..., 0] = np.clip(np.rint(128 + 224 * pool(cb)), 0, 255)
    chroma[..., 1] = np.clip(np.rint(128 + 224 * pool(cr)), 0, 255)
    return np.concatenate([luma.ravel(), chroma.ravel()])


class CyclingSource:
    """``frame()`` returns the next frame of the cycle as a SourceFrame with a new serial."""

    def __init__(self, frames: list[np.ndarray], pixel_format: PixelFormat, width: int, height: int) -> None:
        self._frames = frames
        self._format = pixel_format
        self._size = (width, height)
        self._index = 0

    def frame(self) -> SourceFrame:
        data = self._frames[self._index % len(self._frames)]
        self._index += 1
        width, height = self._size
        return SourceFrame(self._format, width, height, data, next(_serials), opaque=True)


def rgba_source(width: int, height: int, pattern: str = "smpte") -> CyclingSource:
    return CyclingSource(rgba_cycle(width, height, pattern=pattern), "rgba8", width, height)


def nv12_source(width: int, height: int, pattern: str = "smpte") -> CyclingSource:
    return CyclingSource([rgba_to_nv12(f) for f in rgba_cycle(width, height, pattern=pattern)], "nv12", width, height)


def scratch_dir() -> Path:
    """A scratch folder in memory (/dev/shm when there is one), so peers read frames without disk I/O."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="compositord-bench-", dir=base))


def write_raw_cycle(folder: Path, name: str, frames: list[np.ndarray], ext: str = "rgba") -> tuple[Path, str]:
    """The frames as ``name.EXT`` (all of them, for FFmpeg's -stream_loop) and ``name_%d.EXT`` (GStreamer's
    multifilesrc); returns (the concatenated file, the multifilesrc pattern)."""
    joined = folder / f"{name}.{ext}"
    with joined.open("wb") as out:
        for index, frame in enumerate(frames):
            raw = np.ascontiguousarray(frame).tobytes()
            out.write(raw)
            (folder / f"{name}_{index}.{ext}").write_bytes(raw)
    return joined, str(folder / f"{name}_%d.{ext}")
