"""sessions: N sessions of one daemon at once, each a 1280x720 30 fps pipeline in an engine process of its own.

Each session: an animated full-frame background (1280x720 bars), two animated 640x360 pictures in
picture scaled to 426x240 side by side, a text overlay, NV12 output read back every frame. For
N = 1, 2, 4, 8 (``--sessions``), after a warm-up, for ``--seconds`` (default 10): per session the
frames the engine dropped (slots it overran) and rendered, the render time p99 (the worst of the
per-second p99s the engine reports), and the CPU its engine process used; the control process's
CPU beside them.

Beside it, in the same run (interleaved: ours then theirs for each N), GStreamer runs N equivalent
pipelines as N ``gst-launch-1.0`` processes (live ``videotestsrc`` sources in NV12, ``compositor``
scaling the two small ones, ``textoverlay``, NV12 out into ``fpsdisplaysink`` with a synced
``fakesink``): frames rendered over the same window (from fpsdisplaysink's counts) against the
frames due, and each process's CPU. "Sustained" means no frame dropped; the scenario reports the
largest N each sustains, and with a 1 % tolerance.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from compositord.perf.options import BenchOptions
from compositord.perf.peers import gstreamer_version, have_gstreamer
from compositord.perf.scenario_latency import cpu_seconds

NAME = "sessions"
WIDTH, HEIGHT, FPS = 1280, 720, 30
PIP_W, PIP_H = 640, 360
PIP_RECTS = ({"x": 40, "y": 440, "width": 426, "height": 240}, {"x": 814, "y": 440, "width": 426, "height": 240})
WARMUP_S = 3.0
TOLERANCE = 0.01  # "sustained with 1 % tolerance": at most this fraction of the due frames dropped
GST_ELEMENTS = ("compositor", "videotestsrc", "textoverlay", "fpsdisplaysink", "fakesink")


def pipeline(index: int) -> dict[str, Any]:
    layers: dict[str, Any] = {"in_0": {"rect": {"x": 0, "y": 0, "width": WIDTH, "height": HEIGHT}}}
    for slot, rect in enumerate(PIP_RECTS, start=1):
        layers[f"in_{slot}"] = {"rect": rect, "aspect_fit": False}
    return {
        "nodes": {
            "background": {"kind": "video::colorbars", "params": {"width": WIDTH, "height": HEIGHT, "animated": True}},
            "pip_1": {
                "kind": "video::colorbars",
                "params": {"width": PIP_W, "height": PIP_H, "pattern": "ramp", "animated": True},
            },
            "pip_2": {"kind": "video::colorbars", "params": {"width": PIP_W, "height": PIP_H, "animated": True}},
            "comp": {
                "kind": "video::compositor",
                "params": {
                    "width": WIDTH,
                    "height": HEIGHT,
                    "fps": FPS,
                    "num_inputs": 3,
                    "output_format": "nv12",
                    "layers": layers,
                    "text_overlays": [{"id": "title", "text": f"compositord session {index}", "rect": {"x": 40, "y": 40}}],
                },
            },
        },
        "connections": [
            {"from_node": "background", "from_pin": "out", "to_node": "comp", "to_pin": "in_0"},
            {"from_node": "pip_1", "from_pin": "out", "to_node": "comp", "to_pin": "in_1"},
            {"from_node": "pip_2", "from_pin": "out", "to_node": "comp", "to_pin": "in_2"},
        ],
    }


# ----------------------------------------------------------------------------- ours


async def _measure_ours(url: str, count: int, seconds: float, daemon_pid: int) -> dict[str, Any]:
    import trio

    from compositord.client import open_client

    async with open_client(url) as client:
        session_ids = [session["session_id"] for session in await client.list_sessions()]
        for index in range(len(session_ids), count):
            session_ids.append(await client.create_session(f"s{index}", pipeline(index)))
        engines = {session_id: (await client.get_pipeline(session_id))["engine"] for session_id in session_ids}
        stats: dict[str, list[tuple[float, dict[str, Any]]]] = {session_id: [] for session_id in session_ids}

        async def collect() -> None:
            async for event in client.events():
                payload = event.payload
                if event.name == "nodestatsupdated" and payload["node_id"] == "comp" and payload["session_id"] in stats:
                    stats[payload["session_id"]].append((time.monotonic(), dict(payload["stats"])))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect)
            await trio.sleep(WARMUP_S)
            pids = {session_id: engine.get("pid") for session_id, engine in engines.items()}
            cpu_before = {session_id: _cpu(pid) for session_id, pid in pids.items()}
            control_before = cpu_seconds(daemon_pid)
            started = time.monotonic()
            await trio.sleep(seconds)
            ended = time.monotonic()
            cpu_after = {session_id: _cpu(pid) for session_id, pid in pids.items()}
            control_after = cpu_seconds(daemon_pid)
            await trio.sleep(1.2)  # the stats of the window's last second
            nursery.cancel_scope.cancel()
    rows = []
    for session_id in session_ids:
        # The engine reports once a second: the window runs from its last report before `started` to its
        # last report by the end (stats count whole frames, so the due frames follow the reports' times).
        samples = stats[session_id]
        before = [(t, s) for t, s in samples if t < started]
        inside = [(t, s) for t, s in samples if started <= t <= ended + 1.1]
        if not before or not inside:
            rows.append({"session_id": session_id, "error": "no stats around the window"})
            continue
        (t0, base), (t1, last) = before[-1], inside[-1]
        rows.append(
            {
                "session_id": session_id,
                "frames_rendered": last["frames_rendered"] - base["frames_rendered"],
                "frames_due": round((t1 - t0) * FPS),
                "frames_dropped": last["frames_dropped"] - base["frames_dropped"],
                "render_ms_p99": max(s["render_ms_p99"] for _, s in inside),
                "render_ms_p50": sorted(s["render_ms_p50"] for _, s in inside)[len(inside) // 2],
                "cpu_cores": round((cpu_after[session_id] - cpu_before[session_id]) / (ended - started), 3),
            }
        )
    return {"sessions": rows, "control_cpu_cores": round((control_after - control_before) / (ended - started), 3)}


def _cpu(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        return cpu_seconds(pid)
    except (OSError, ValueError, IndexError):
        return 0.0


def run_ours(count: int, seconds: float) -> dict[str, Any]:
    import trio
    import yaml

    folder = Path(tempfile.mkdtemp(prefix="compositord-sessions-"))
    try:
        config = folder / "s0.yaml"
        config.write_text(yaml.safe_dump(pipeline(0)))
        stderr_path = folder / "stderr.txt"
        with stderr_path.open("wb") as stderr:
            daemon = subprocess.Popen(
                [
                    *(sys.executable, "-m", "compositord", "run", "--port", "0"),
                    *("--state-dir", str(folder / "state"), "--config", str(config), "--log-level", "WARNING"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        try:
            deadline = time.monotonic() + 60
            while "compositord: serving ws://" not in (text := stderr_path.read_text(errors="replace")):
                if daemon.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the daemon did not start:\n{text}")
                time.sleep(0.05)
            url = text.split("compositord: serving ", 1)[1].split()[0]
            return trio.run(_measure_ours, url, count, seconds, daemon.pid)
        finally:
            daemon.terminate()
            try:
                daemon.wait(timeout=20)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ----------------------------------------------------------------------------- GStreamer


def gst_command(index: int) -> list[str]:
    nv12 = "video/x-raw,format=NV12"
    pads = ["sink_0::xpos=0 sink_0::ypos=0"]
    for slot, rect in enumerate(PIP_RECTS, start=1):
        pads.append(
            f"sink_{slot}::xpos={rect['x']} sink_{slot}::ypos={rect['y']} sink_{slot}::width={rect['width']} sink_{slot}::height={rect['height']}"
        )
    description = (
        f"compositor name=c background=black {' '.join(pads)} "
        f"! {nv12},width={WIDTH},height={HEIGHT},framerate={FPS}/1 "
        f'! textoverlay text="gstreamer session {index}" valignment=top halignment=left font-desc="Sans 24" '
        "! fpsdisplaysink name=fps video-sink=fakesink text-overlay=false sync=true fps-update-interval=500 "
        f"videotestsrc is-live=true pattern=smpte horizontal-speed=4 ! {nv12},width={WIDTH},height={HEIGHT},framerate={FPS}/1 ! c.sink_0 "
        f"videotestsrc is-live=true pattern=gradient horizontal-speed=4 ! {nv12},width={PIP_W},height={PIP_H},framerate={FPS}/1 ! c.sink_1 "
        f"videotestsrc is-live=true pattern=smpte horizontal-speed=4 ! {nv12},width={PIP_W},height={PIP_H},framerate={FPS}/1 ! c.sink_2"
    )
    return ["gst-launch-1.0", "-v", *_split(description)]


def _split(description: str) -> list[str]:
    import shlex

    return shlex.split(description)


_RENDERED = re.compile(r"last-message = rendered: (\d+), dropped: (\d+)")


def run_gstreamer(count: int, seconds: float, folder: Path) -> dict[str, Any]:
    """N gst-launch processes at once; their frames over the window from fpsdisplaysink's counts."""
    logs = [folder / f"gst-{count}-{index}.txt" for index in range(count)]
    processes = []
    for index, log in enumerate(logs):
        with log.open("wb") as out:
            processes.append(subprocess.Popen(gst_command(index), stdout=out, stderr=subprocess.STDOUT))
    try:
        time.sleep(WARMUP_S)
        cpu_before = [_cpu(p.pid) for p in processes]
        counts_before = [_last_counts(log) for log in logs]
        started = time.monotonic()
        time.sleep(seconds)
        ended = time.monotonic()
        cpu_after = [_cpu(p.pid) for p in processes]
        counts_after = [_last_counts(log) for log in logs]
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    rows = []
    for index, (before, after) in enumerate(zip(counts_before, counts_after, strict=True)):
        if before is None or after is None:
            rows.append({"pipeline": index, "error": logs[index].read_text(errors="replace")[-400:]})
            continue
        rendered = after[0] - before[0]
        due = round((ended - started) * FPS)
        rows.append(
            {
                "pipeline": index,
                "frames_rendered": rendered,
                "frames_due": due,
                "frames_dropped": max(0, due - rendered) + (after[1] - before[1]),
                "cpu_cores": round((cpu_after[index] - cpu_before[index]) / (ended - started), 3),
            }
        )
    return {"pipelines": rows}


def _last_counts(log: Path) -> tuple[int, int] | None:
    found = _RENDERED.findall(log.read_text(errors="replace"))
    return (int(found[-1][0]), int(found[-1][1])) if found else None


# ----------------------------------------------------------------------------- the scenario


def _sustained(rows: list[dict[str, Any]], tolerance: float) -> bool:
    if not rows or any("error" in row for row in rows):
        return False
    return all(row["frames_dropped"] <= tolerance * max(1, row["frames_due"]) for row in rows)


def run(options: BenchOptions) -> dict[str, Any]:
    seconds = options.seconds if options.seconds is not None else (2.0 if options.quick else 10.0)
    counts = (1,) if options.quick else options.sessions
    missing = have_gstreamer(*GST_ELEMENTS) if options.compare else "not asked for (--compare)"
    options.say(
        f"== {NAME}: N sessions of {WIDTH}x{HEIGHT} at {FPS} fps (bars + 2 PiP + text, NV12 read back), "
        f"{seconds:g} s each after {WARMUP_S:g} s warm-up; load average before: {os.getloadavg()[0]:.2f}"
    )
    results: list[dict[str, Any]] = []
    folder = Path(tempfile.mkdtemp(prefix="compositord-sessions-gst-"))
    try:
        for count in counts:
            ours = run_ours(count, seconds)
            row: dict[str, Any] = {"sessions": count, "ours": ours}
            options.say(_format_ours(count, ours))
            if missing is None:
                theirs = run_gstreamer(count, seconds, folder)
                row["gstreamer"] = theirs
                options.say(_format_gst(count, theirs))
            results.append(row)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    summary: dict[str, Any] = {}
    for who, key in (("ours", "sessions"), ("gstreamer", "pipelines")):
        for label, tolerance in (("strict", 0.0), ("1pct", TOLERANCE)):
            sustained = [row["sessions"] for row in results if who in row and _sustained(row[who][key], tolerance)]
            summary[f"{who}_max_sustained_{label}"] = max(sustained, default=0)
    options.say(
        f"-- sustained without a dropped frame: compositord {summary['ours_max_sustained_strict']} sessions"
        + (f", GStreamer {summary['gstreamer_max_sustained_strict']}" if missing is None else f" (GStreamer: {missing})")
        + f"; with {TOLERANCE:.0%} tolerance: compositord {summary['ours_max_sustained_1pct']}"
        + (f", GStreamer {summary['gstreamer_max_sustained_1pct']}" if missing is None else "")
    )
    return {
        "rows": results,
        "summary": summary,
        "seconds": seconds,
        "gstreamer": gstreamer_version() if missing is None else None,
        "gstreamer_missing": missing,
    }


def _format_ours(count: int, ours: dict[str, Any]) -> str:
    parts = [
        f"{row.get('frames_dropped', '?')} dropped / {row.get('frames_rendered', '?')} rendered, "
        f"p99 {row.get('render_ms_p99', '?')} ms, {row.get('cpu_cores', '?')} cores"
        for row in ours["sessions"]
    ]
    return f"-- compositord, {count} sessions (control process {ours['control_cpu_cores']} cores): " + "; ".join(parts)


def _format_gst(count: int, theirs: dict[str, Any]) -> str:
    parts = [
        f"{row.get('frames_dropped', '?')} dropped / {row.get('frames_rendered', '?')} rendered, {row.get('cpu_cores', '?')} cores"
        if "error" not in row
        else f"failed: {row['error'][-120:]!r}"
        for row in theirs["pipelines"]
    ]
    return f"-- GStreamer, {count} pipelines: " + "; ".join(parts)
