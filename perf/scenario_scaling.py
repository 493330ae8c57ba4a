"""scaling: cost per frame against layer count (1, 2, 4, 8, 16) and output size (720p, 1080p, 2160p).

Layer 0 is a full-frame background the size of the output; layers 1.. are 640x360 sources drawn at a
quarter of the canvas (half its width and height) at opacity 0.8, stepped diagonally so they overlap.
Every source is new every frame; RGBA output read back every frame. Each configuration runs in its own
process so its peak RSS (``VmHWM``) is its own; the RSS includes the pre-made source frames
(two full-frame backgrounds and two frames per picture-in-picture source).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from typing import Any

from compositord.perf.measure import percentiles
from compositord.perf.options import BenchOptions

NAME = "scaling"
LAYER_COUNTS = (1, 2, 4, 8, 16)
SIZES = {"720p": (1280, 720), "1080p": (1920, 1080), "2160p": (3840, 2160)}
PIP_SOURCE = (640, 360)


def scene_params(layers: int, width: int, height: int) -> dict[str, Any]:
    entries: dict[str, Any] = {"in_0": {"rect": {"x": 0, "y": 0, "width": width, "height": height}}}
    step_x = (width // 2) // max(1, layers - 1)
    step_y = (height // 2) // max(1, layers - 1)
    for index in range(1, layers):
        entries[f"in_{index}"] = {
            "rect": {"x": (index - 1) * step_x, "y": (index - 1) * step_y, "width": width // 2, "height": height // 2},
            "opacity": 0.8,
            "aspect_fit": False,
        }
    return {"width": width, "height": height, "num_inputs": layers, "output_format": "rgba8", "layers": entries}


def measure_one(layers: int, width: int, height: int, frames: int) -> dict[str, Any]:
    from compositord.perf import sources
    from compositord.perf.harness import CompositorRun, compositor_params, gl_context

    made = {"in_0": sources.CyclingSource(sources.rgba_cycle(width, height, count=2), "rgba8", width, height).frame}
    for index in range(1, layers):
        made[f"in_{index}"] = sources.CyclingSource(
            sources.rgba_cycle(*PIP_SOURCE, pattern="ramp", count=2), "rgba8", *PIP_SOURCE
        ).frame
    per_frame: list[float] = []
    with gl_context() as ctx:
        run_ = CompositorRun(ctx, compositor_params(scene_params(layers, width, height)), made)
        try:
            for _ in range(3):
                run_.frame()
            for _ in range(frames):
                started = time.perf_counter()
                run_.frame()
                per_frame.append((time.perf_counter() - started) * 1000.0)
        finally:
            run_.release()
    stats = percentiles(per_frame, (50, 99))
    mean = sum(per_frame) / len(per_frame)
    return {
        "layers": layers,
        "width": width,
        "height": height,
        "frames": frames,
        "ms_per_frame_mean": round(mean, 3),
        "ms_per_frame_p50": stats["p50"],
        "ms_per_frame_p99": stats["p99"],
        "fps": round(1000.0 / mean, 1),
        "peak_rss_mib": round(peak_rss_kib() / 1024.0, 1),
    }


def peak_rss_kib() -> int:
    """This process's peak RSS: VmHWM from /proc (reset by exec), else ``ru_maxrss``, which Linux
    carries across exec from the forked parent and so reads the parent's peak when that was larger."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run(options: BenchOptions) -> dict[str, Any]:
    frames = options.frames_or(60, 4)
    sizes = dict(list(SIZES.items())[:1]) if options.quick else SIZES
    counts = (1, 4) if options.quick else LAYER_COUNTS
    options.say(f"== {NAME}: ms per frame (mean over {frames} frames, RGBA read back) and peak RSS, one process per cell")
    rows: list[dict[str, Any]] = []
    for label, (width, height) in sizes.items():
        for layers in counts:
            argv = [sys.executable, "-m", "compositord.perf.scenario_scaling", str(layers), str(width), str(height), str(frames)]
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"scaling cell {layers} layers {label} failed:\n{done.stderr[-2000:]}")
            row = json.loads(done.stdout.strip().splitlines()[-1])
            row["size"] = label
            rows.append(row)
    options.say(table(rows))
    return {"rows": rows}


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one row per size, a column per layer count, cells 'ms (fps), RSS'."""
    counts = sorted({row["layers"] for row in rows})
    sizes = list(dict.fromkeys(row["size"] for row in rows))
    lines = [
        "| output | " + " | ".join(f"{n} layer{'s' if n > 1 else ''}" for n in counts) + " |",
        "| --- | " + " | ".join("---" for _ in counts) + " |",
    ]
    for size in sizes:
        cells = []
        for n in counts:
            match = [row for row in rows if row["size"] == size and row["layers"] == n]
            cells.append(f"{match[0]['ms_per_frame_mean']:.2f} ms, {match[0]['peak_rss_mib']:.0f} MiB" if match else "-")
        lines.append(f"| {size} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    layer_count, w, h, n = (int(value) for value in sys.argv[1:5])
    print(json.dumps(measure_one(layer_count, w, h, n)))
