"""Running a peer (an FFmpeg or GStreamer command line) and timing it.

A peer's wall-clock includes its process start (loading libraries and
plugins) while ours does not include making the GL context. To compare the
per-frame work, each peer's start-up cost is measured once with a one-frame
run of the same command and subtracted from every timed run (the printed
figures say so; ``--no-startup-correction`` keeps the raw times).
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class PeerFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class Peer:
    """``command(frames)`` is the argv of a run that processes ``frames`` frames."""

    name: str
    command: Callable[[int], list[str]]

    def run(self, frames: int) -> float:
        argv = self.command(frames)
        started = time.perf_counter()
        done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            tail = done.stderr.decode(errors="replace").strip().splitlines()[-5:]
            raise PeerFailed(f"{self.name} exited {done.returncode}: {' '.join(argv)}\n" + "\n".join(tail))
        return wall

    def startup_seconds(self, runs: int = 3) -> float:
        """Median wall-clock of a one-frame run: process start, graph setup, one frame."""
        return statistics.median(self.run(1) for _ in range(runs))


def have_ffmpeg() -> bool:
    return shutil.which("ffmpeg") is not None


def have_gstreamer(*elements: str) -> str | None:
    """None when gst-launch-1.0 and every element are there, else what is missing (for the printed note)."""
    if shutil.which("gst-launch-1.0") is None or shutil.which("gst-inspect-1.0") is None:
        return "gst-launch-1.0 not installed (apt-get install gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad)"
    missing = [
        element for element in elements if subprocess.run(["gst-inspect-1.0", "--exists", element], check=False).returncode != 0
    ]
    return f"GStreamer elements missing: {', '.join(missing)}" if missing else None


def ffmpeg_version() -> str:
    out = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0] if out else "unknown"


def gstreamer_version() -> str:
    out = subprocess.run(["gst-launch-1.0", "--version"], capture_output=True, text=True, check=False).stdout
    lines = out.splitlines()
    return lines[1] if len(lines) > 1 else (lines[0] if lines else "unknown")


class PeerRuns:
    """The peers of one scenario: start-up measured once, then one timed run each per repetition.

    A peer that fails (missing filter, a build without freetype...) is dropped with a note
    instead of ending the benchmark; the others go on.
    """

    def __init__(self, peers: list[Peer], frames: int, *, startup_correction: bool, notes: list[str]) -> None:
        from compositord.perf.measure import Timing

        self.frames = frames
        self.notes = notes
        self.startup: dict[str, float] = {}
        self.timings: dict[str, Timing] = {}
        self._active: list[Peer] = []
        for peer in peers:
            try:
                self.startup[peer.name] = peer.startup_seconds() if startup_correction else 0.0
            except PeerFailed as exc:
                notes.append(f"{peer.name} left out: {exc}")
                continue
            self.timings[peer.name] = Timing(peer.name, frames)
            self._active.append(peer)

    def run_once(self) -> None:
        for peer in list(self._active):
            try:
                wall = peer.run(self.frames)
            except PeerFailed as exc:
                self.notes.append(f"{peer.name} left out: {exc}")
                self._active.remove(peer)
                continue
            self.timings[peer.name].walls.append(max(1e-6, wall - self.startup[peer.name]))

    def finished(self) -> dict[str, Any]:
        """name -> Timing, for the peers with at least one timed run."""
        return {name: timing for name, timing in self.timings.items() if timing.walls}

    def report(self, ours: Any, say: Callable[..., None]) -> dict[str, Any]:
        """Print each finished peer beside ``ours`` (ratios per repetition) and the notes; name -> figures."""
        from compositord.perf.measure import ratios

        figures: dict[str, Any] = {}
        for name, timing in self.finished().items():
            per_rep = ratios(ours, timing)
            say(
                f"-- peer {name} (start-up {self.startup[name]:.3f}s subtracted)",
                timing.summary(),
                f"ratio compositord/{name} fps per repetition: {per_rep}",
            )
            figures[name] = {**timing.as_dict(), "startup_s": round(self.startup[name], 4), "ratio_per_rep": per_rep}
        for note in self.notes:
            say(f"(no peer: {note})")
        return figures
