"""compositor_only: 1280x720 RGBA read back every frame; a full-frame background, three 640x360
picture-in-picture layers scaled from 1280x720 (opacity 0.8, at (32,32), (608,328) and centred, the
centred one rotated 15 degrees) and one text overlay; every source new every frame.

Peers, same geometry, reading the same pre-made frames from /dev/shm:
GStreamer ``compositor`` (scaling by ``videoscale`` and the rotation by ``rotate`` before it, since it
cannot rotate; alpha per pad; ``textoverlay`` after it) and FFmpeg (scale, rotate, colorchannelmixer for
the opacity, overlay in RGB, drawtext).
"""

from __future__ import annotations

import math
import time
from typing import Any

from compositord.perf import peers, sources
from compositord.perf.harness import CompositorRun, compositor_params, gl_context
from compositord.perf.measure import Timing
from compositord.perf.options import BenchOptions

NAME = "compositor_only"
WIDTH, HEIGHT = 1280, 720
PIP_W, PIP_H = 640, 360
PIP_POSITIONS = [(32, 32), (608, 328), ((WIDTH - PIP_W) // 2, (HEIGHT - PIP_H) // 2)]
ROTATION_DEGREES = 15.0
OPACITY = 0.8
TEXT = "compositord"
TEXT_X, TEXT_Y, FONT_SIZE = 40, 640, 48
FONT_FILE = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def scene_params() -> dict[str, Any]:
    layers: dict[str, Any] = {"in_0": {"rect": {"x": 0, "y": 0, "width": WIDTH, "height": HEIGHT}}}
    for index, (x, y) in enumerate(PIP_POSITIONS, start=1):
        layers[f"in_{index}"] = {"rect": {"x": x, "y": y, "width": PIP_W, "height": PIP_H}, "opacity": OPACITY}
    layers["in_3"]["rotation_degrees"] = ROTATION_DEGREES
    return {
        "width": WIDTH,
        "height": HEIGHT,
        "num_inputs": 4,
        "output_format": "rgba8",
        "layers": layers,
        "text_overlays": [{"id": "title", "text": TEXT, "rect": {"x": TEXT_X, "y": TEXT_Y}, "font_size": FONT_SIZE}],
    }


def _ffmpeg(files: list[str]) -> peers.Peer:
    inputs: list[str] = []
    for path in files:
        inputs += ["-stream_loop", "-1", "-f", "rawvideo", "-pix_fmt", "rgba", "-s", f"{WIDTH}x{HEIGHT}", "-r", "30", "-i", path]
    angle = f"{ROTATION_DEGREES}*PI/180"
    graph = (
        f"[1]scale={PIP_W}:{PIP_H},colorchannelmixer=aa={OPACITY}[p1];"
        f"[2]scale={PIP_W}:{PIP_H},colorchannelmixer=aa={OPACITY}[p2];"
        f"[3]scale={PIP_W}:{PIP_H},rotate={angle}:c=none,colorchannelmixer=aa={OPACITY}[p3];"
        f"[0][p1]overlay={PIP_POSITIONS[0][0]}:{PIP_POSITIONS[0][1]}:format=rgb[o1];"
        f"[o1][p2]overlay={PIP_POSITIONS[1][0]}:{PIP_POSITIONS[1][1]}:format=rgb[o2];"
        f"[o2][p3]overlay={PIP_POSITIONS[2][0]}:{PIP_POSITIONS[2][1]}:format=rgb,"
        f"drawtext=fontfile={FONT_FILE}:text={TEXT}:fontsize={FONT_SIZE}:fontcolor=white:x={TEXT_X}:y={TEXT_Y},format=rgba"
    )

    def command(frames: int) -> list[str]:
        return [
            "ffmpeg",
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "error",
            *inputs,
            "-filter_complex",
            graph,
            "-frames:v",
            str(frames),
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgba",
            "-y",
            "/dev/null",
        ]

    return peers.Peer("ffmpeg", command)


GST_ELEMENTS = ("compositor", "videoscale", "rotate", "textoverlay", "multifilesrc", "fakesink", "videoconvert")


def _gstreamer(patterns: list[str]) -> peers.Peer:
    caps = f"video/x-raw,format=RGBA,width={WIDTH},height={HEIGHT},framerate=30/1"
    pads = ["sink_0::xpos=0", "sink_0::ypos=0"]
    for index, (x, y) in enumerate(PIP_POSITIONS, start=1):
        pads += [f"sink_{index}::xpos={x}", f"sink_{index}::ypos={y}", f"sink_{index}::alpha={OPACITY}"]
    radians = f"{math.radians(ROTATION_DEGREES):.6f}"

    def command(frames: int) -> list[str]:
        argv = [
            "gst-launch-1.0",
            "-q",
            "compositor",
            "name=c",
            "background=black",
            *pads,
            "!",
            f"video/x-raw,format=RGBA,width={WIDTH},height={HEIGHT}",
            "!",
            "textoverlay",
            f"text={TEXT}",
            f"font-desc=Sans {FONT_SIZE * 3 // 4}",
            "halignment=left",
            "valignment=top",
            f"xpad={TEXT_X}",
            f"ypad={TEXT_Y}",
            "!",
            "fakesink",
            "sync=false",
        ]
        for index, pattern in enumerate(patterns):
            argv += [
                "multifilesrc",
                f"location={pattern}",
                "loop=true",
                f"num-buffers={frames}",
                f"caps={caps}",
                "!",
                "rawvideoparse",
                "use-sink-caps=true",
                "!",
            ]
            if index > 0:
                argv += ["videoscale", "!", f"video/x-raw,width={PIP_W},height={PIP_H}", "!"]
            if index == 3:
                argv += ["rotate", f"angle={radians}", "!"]
            argv += [f"c.sink_{index}"]
        return argv

    return peers.Peer("gstreamer", command)


def run(options: BenchOptions) -> dict[str, Any]:
    frames = options.frames_or(300, 30)
    iterations = options.iterations_or(3, 1)
    options.say(
        f"== {NAME}: {WIDTH}x{HEIGHT} RGBA read back, background + 3 PiP (one rotated) + text, {frames} frames x {iterations}"
    )
    cycles = [sources.rgba_cycle(WIDTH, HEIGHT, pattern="smpte" if i % 2 == 0 else "ramp") for i in range(4)]
    ours = Timing("compositord", frames)
    peer_list: list[peers.Peer] = []
    notes: list[str] = []
    scratch = None
    if options.compare:
        scratch = sources.scratch_dir()
        written = [sources.write_raw_cycle(scratch, f"src{i}", cycle) for i, cycle in enumerate(cycles)]
        missing = peers.have_gstreamer(*GST_ELEMENTS)
        if missing is None:
            peer_list.append(_gstreamer([pattern for _, pattern in written]))
        else:
            notes.append(missing)
        if peers.have_ffmpeg():
            peer_list.append(_ffmpeg([str(joined) for joined, _ in written]))
        else:
            notes.append("ffmpeg not installed")
    peer_runs = peers.PeerRuns(peer_list, frames, startup_correction=options.startup_correction, notes=notes)

    with gl_context() as ctx:
        run_ = CompositorRun(
            ctx,
            compositor_params(scene_params()),
            {f"in_{i}": sources.CyclingSource(cycle, "rgba8", WIDTH, HEIGHT).frame for i, cycle in enumerate(cycles)},
        )
        try:
            for _ in range(5):  # warm-up: shader compiles, first uploads, text raster
                run_.frame()
            profile_rows = _profile(run_, options) if options.profile else None
            for _ in range(iterations):
                started = time.perf_counter()
                for _ in range(frames):
                    run_.frame()
                ours.walls.append(time.perf_counter() - started)
                peer_runs.run_once()  # interleaved: A B C A B C
        finally:
            run_.release()
    if scratch is not None:
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)

    options.say(ours.summary())
    result: dict[str, Any] = {"ours": ours.as_dict(), "peers": peer_runs.report(ours, options.say), "notes": notes}
    if profile_rows is not None:
        result["profile"] = profile_rows
    return result


def _profile(run_: CompositorRun, options: BenchOptions) -> dict[str, Any]:
    from compositord.perf.profile import breakdown

    return breakdown(run_, frames=options.frames_or(120, 20), say=options.say)
