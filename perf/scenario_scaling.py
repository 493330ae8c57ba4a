"""scaling: cost per frame against layer count (1, 2, 4, 8, 16) and output size (720p, 1080p, 2160p).

Layer 0 is a full-frame background the size of the output; layers 1.. are 640x360 sources drawn at a
quarter of the canvas (half its width and height) at opacity 0.8, stepped diagonally so they overlap.
Every source is new every frame; RGBA output read back every frame. Each configuration runs in its own
process so its peak RSS (``VmHWM``) is its own; the RSS includes the pre-made source frames
(two full-frame backgrounds and two frames per picture-in-picture source).

Scenes (``scene_rows``), at ``SCENE_LAYERS`` layers per size, the same sources: ``scene`` is one scene
of that layout (the plain cell again, in the same kind of process); ``fade`` and ``push`` are a frame in
the middle of a transition from that scene to a second one (the same layers stepped the other way): both
scenes drawn into canvases of their own and mixed; ``nested`` is that layout drawn by one compositor
whose picture is the one full-canvas layer of a second (drawn from its texture, only the outer one read
back), against ``scene``, the same layout drawn flat.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from compositord.perf.measure import percentiles
from compositord.perf.options import BenchOptions

NAME = "scaling"
LAYER_COUNTS = (1, 2, 4, 8, 16)
SCENE_LAYERS = 4
SCENE_MODES = ("scene", "fade", "push", "nested")
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


def other_scene(layers: int, width: int, height: int) -> dict[str, Any]:
    """The layout of ``scene_params`` with the picture-in-picture layers stepped from the other side."""
    layout = scene_params(layers, width, height)["layers"]
    for index in range(1, layers):
        rect = layout[f"in_{index}"]["rect"]
        rect["x"] = width - rect["x"] - rect["width"]
    return layout


def made_sources(layers: int, width: int, height: int) -> dict[str, Any]:
    from compositord.perf import sources

    made = {"in_0": sources.CyclingSource(sources.rgba_cycle(width, height, count=2), "rgba8", width, height).frame}
    for index in range(1, layers):
        made[f"in_{index}"] = sources.CyclingSource(
            sources.rgba_cycle(*PIP_SOURCE, pattern="ramp", count=2), "rgba8", *PIP_SOURCE
        ).frame
    return made


def frame_function(ctx: Any, mode: str, layers: int, width: int, height: int) -> tuple[Callable[[], Any], Callable[[], None]]:
    """(one frame, release) of a cell: the plain layout, a transition frame, or the layout nested."""
    from compositord.daemon.engine.render.renderer import Renderer, Transition
    from compositord.daemon.engine.render.scene import resolve_scene
    from compositord.perf.harness import CompositorRun, compositor_params
    from compositord.protocol.scenes import TransitionSpec, mix_geometry
    from compositord.protocol.scenes import scene_params as flat

    made = made_sources(layers, width, height)
    params = scene_params(layers, width, height)
    if mode in ("plain", "scene"):
        run_ = CompositorRun(ctx, compositor_params(params), made)
        return run_.frame, run_.release
    renderers = [Renderer(ctx, width, height)]

    def release_all() -> None:
        for renderer in renderers:
            renderer.release()

    if mode in ("fade", "push"):
        both = {
            **params,
            "layers": {},
            "scenes": {"a": {"layers": params["layers"]}, "b": {"layers": other_scene(layers, width, height)}},
        }
        full = compositor_params({**both, "program_scene": "b"})
        mix = mix_geometry(TransitionSpec(mode, direction="left"), 0.5, width, height)

        def transition_frame() -> Any:
            frames = {pin: make() for pin, make in made.items()}
            outgoing = resolve_scene(flat(full, "a"), frames)
            incoming = resolve_scene(flat(full, "b"), frames)
            renderer = renderers[0]
            renderer.begin_frame()
            try:
                return renderer.draw_program(incoming, frames, transition=Transition(mix, outgoing))
            finally:
                renderer.end_frame(frames)

        return transition_frame, release_all
    if mode != "nested":
        raise ValueError(f"unknown scaling mode {mode!r}")
    inner_params = compositor_params(params)
    outer_params = compositor_params(
        {
            "width": width,
            "height": height,
            "num_inputs": 1,
            "layers": {"in_0": {"rect": {"x": 0, "y": 0, "width": width, "height": height}}},
        }
    )
    renderers.append(Renderer(ctx, width, height))

    def nested_frame() -> Any:
        frames = {pin: make() for pin, make in made.items()}
        inner, outer = renderers
        inner.begin_frame()
        try:
            inner.draw_program(resolve_scene(inner_params, frames), frames, read_back=False, keep_rgba=True)
            picture = inner.program_texture()
        finally:
            inner.end_frame(frames)
        assert picture is not None
        nested = {"in_0": picture}
        outer.begin_frame()
        try:
            return outer.draw_program(resolve_scene(outer_params, nested), nested)
        finally:
            outer.end_frame(nested)

    return nested_frame, release_all


def measure_one(layers: int, width: int, height: int, frames: int, mode: str = "plain") -> dict[str, Any]:
    from compositord.perf.harness import gl_context

    per_frame: list[float] = []
    with gl_context() as ctx:
        one_frame, release = frame_function(ctx, mode, layers, width, height)
        try:
            for _ in range(3):
                one_frame()
            cpu_started = time.process_time()  # every thread of the process: llvmpipe's rasterizers too
            for _ in range(frames):
                started = time.perf_counter()
                one_frame()
                per_frame.append((time.perf_counter() - started) * 1000.0)
            cpu_ms = (time.process_time() - cpu_started) * 1000.0 / frames
        finally:
            release()
    stats = percentiles(per_frame, (50, 99))
    mean = sum(per_frame) / len(per_frame)
    return {
        "layers": layers,
        "mode": mode,
        "width": width,
        "height": height,
        "frames": frames,
        "ms_per_frame_mean": round(mean, 3),
        "ms_per_frame_p50": stats["p50"],
        "ms_per_frame_p99": stats["p99"],
        # CPU time per frame: what a frame costs, less disturbed than wall time when the machine is shared.
        "cpu_ms_per_frame": round(cpu_ms, 3),
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
    rows = [cell(layers, label, width, height, frames, "plain") for label, (width, height) in sizes.items() for layers in counts]
    options.say(table(rows))
    options.say(f"== {NAME}: scenes at {SCENE_LAYERS} layers: one scene, a transition frame (two scenes mixed), nested vs flat")
    scene_rows: list[dict[str, Any]] = []
    # Interleaved per size, so that a drift of the shared machine's speed touches every mode alike.
    for label, (width, height) in sizes.items():
        scene_rows += [cell(SCENE_LAYERS, label, width, height, frames, mode) for mode in SCENE_MODES]
    options.say(scene_table(scene_rows))
    return {"rows": rows, "scene_rows": scene_rows}


def cell(layers: int, label: str, width: int, height: int, frames: int, mode: str) -> dict[str, Any]:
    """One measurement in a process of its own."""
    argv = [sys.executable, "-m", "compositord.perf.scenario_scaling", str(layers), str(width), str(height), str(frames), mode]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"scaling cell {layers} layers {label} {mode} failed:\n{done.stderr[-2000:]}")
    row: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    row["size"] = label
    return row


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


def scene_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one row per size, a column per mode, cells 'wall ms / CPU ms (CPU x the one scene)'."""
    sizes = list(dict.fromkeys(row["size"] for row in rows))
    lines = [
        "| output | one scene | fade frame | push frame | nested (flat: one scene) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for size in sizes:
        by_mode = {row["mode"]: row for row in rows if row["size"] == size}
        base = by_mode["scene"].get("cpu_ms_per_frame") if "scene" in by_mode else None
        cells = []
        for mode in SCENE_MODES:
            row = by_mode.get(mode)
            if row is None:
                cells.append("-")
                continue
            cpu = row.get("cpu_ms_per_frame", 0.0)
            ratio = f" ({cpu / base:.2f}x)" if mode != "scene" and base else ""
            cells.append(f"{row['ms_per_frame_mean']:.2f} / {cpu:.2f} ms{ratio}")
        lines.append(f"| {size} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    layer_count, w, h, n = (int(value) for value in sys.argv[1:5])
    print(json.dumps(measure_one(layer_count, w, h, n, sys.argv[5] if len(sys.argv) > 5 else "plain")))
