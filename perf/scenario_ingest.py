"""``compositord bench ingest``: what an input costs in CPU per frame: a file, a network stream, the screen.

Each input is the engine's own source, 1280x720 at 30 fps, driven as the
render loop drives it (``frame(t)`` 30 times a second from this thread) with
its sound read as the mixer reads it (one output frame's worth per frame),
for ``--seconds`` (default 10, ``--quick`` 1) after a second of warm-up:

- ``file``: ``video::file`` of an H.264 + AAC MP4 (FFmpeg's ``testsrc2`` and
  a sine, made once); ``file_no_audio``: the same file with ``audio: false``,
  so the difference is what the sound costs;
- ``stream_in``: ``av::stream_in`` of MPEG-TS over UDP from a local
  ``ffmpeg -re -stream_loop -1 -c copy`` of that file (the sender only
  copies packets, so its own CPU is small and is not counted);
- ``capture``: ``video::capture`` x11grab of a 1280x720 Xvfb display (what
  is on it does not change x11grab's cost: it copies and converts every
  frame whatever it shows).

Measured: this process's CPU time (``time.process_time``: every thread,
decoder or receiver included) over the window, less what the same polling
loop costs without an input (measured first, ``idle``), divided by the
frames the input decoded: ms of CPU per input frame, and the share of one
core. CPU time, not wall time, so the figure holds on a shared machine
(other load slows it but does not add to it). ``--compare`` runs FFmpeg
doing the same reception alone (``-f null``, pictures converted to yuv420p
where the input is not) for the same seconds, its CPU from ``getrusage``
less its start-up (a run of one frame's duration).
Not part of ``all``: it needs ``ffmpeg`` and ``Xvfb`` (a case without its
tool is skipped and says so).
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from compositord.perf.options import BenchOptions

WIDTH, HEIGHT, FPS = 1280, 720, 30
WARM_UP_S = 1.0
START_TIMEOUT_S = 20.0
CLIP_SECONDS = 10


class _RenderLoopStandIn:
    """Drives a source as the render loop and the mixer do, FPS times a second, on one clock from zero."""

    def __init__(self, source: Any) -> None:
        self._source = source
        self._started = time.monotonic()
        self._index = 0
        self._read_to = 0  # the next sample the mixer reads (its blocks are contiguous)

    def run_for(self, seconds: float) -> None:
        from compositord.daemon.engine.audio.bus import samples_until

        until = time.monotonic() + seconds
        while (now := time.monotonic()) < until:
            t = self._index / FPS
            if self._started + t > now:
                time.sleep(self._started + t - now)
            self._index += 1
            if self._source is None:
                continue
            self._source.frame(t)
            buffer = getattr(self._source, "audio", None)
            if buffer is not None:
                end = samples_until(t + 1 / FPS)
                audio_time = getattr(self._source, "audio_time", None)
                buffer.read(end - self._read_to, at=None if audio_time is None else audio_time(t))
                self._read_to = end


def _measure(make: Callable[[], Any], seconds: float, idle_cpu_per_s: float) -> dict[str, Any]:
    source = make()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while source.frame(time.monotonic()) is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no frame within {START_TIMEOUT_S:g} s (error: {source.error})")
            time.sleep(0.02)
        driver = _RenderLoopStandIn(source)
        driver.run_for(WARM_UP_S)
        frames_before = source.frames_decoded
        audio_before = source.stats().get("audio")
        cpu_before, wall_before = time.process_time(), time.monotonic()
        driver.run_for(seconds)
        cpu, wall = time.process_time() - cpu_before, time.monotonic() - wall_before
        frames = source.frames_decoded - frames_before
        audio_after = source.stats().get("audio")
    finally:
        source.close(timeout=5.0)
    net = max(0.0, cpu - idle_cpu_per_s * wall)
    underrun_ms = None
    if audio_before is not None and audio_after is not None:
        underrun_ms = round(1000 * (audio_after["underrun_samples"] - audio_before["underrun_samples"]) / 48_000, 1)
    return {
        "frames": frames,
        "fps": round(frames / wall, 2),
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "cpu_ms_per_frame": round(1000 * net / frames, 3) if frames else None,
        "core_percent": round(100 * net / wall, 1),
        "sound": audio_after is not None,
        "audio_underrun_ms": underrun_ms,
    }


def _child_cpu(command: list[str], timeout: float) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one run of ``command``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=True)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def _peer(command: Callable[[float], list[str]], seconds: float) -> dict[str, Any]:
    """FFmpeg doing the same reception alone for ``seconds`` (``command(seconds)``): its CPU per frame
    (frames: seconds x FPS), less its start-up (a run of one frame's duration), as the other peers' are."""
    startup, _ = _child_cpu(command(1 / FPS), START_TIMEOUT_S + 60)
    cpu, wall = _child_cpu(command(seconds), seconds + START_TIMEOUT_S + 60)
    frames = round(seconds * FPS)
    net = max(0.0, cpu - startup)
    return {
        "frames": frames,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "startup_cpu_s": round(startup, 3),
        "cpu_ms_per_frame": round(1000 * net / frames, 3),
        "core_percent": round(100 * net / wall, 1),
    }


def _make_clip(ffmpeg: str, path: Path) -> None:
    command = [ffmpeg, "-nostdin", "-loglevel", "error", "-y"]
    command += ["-f", "lavfi", "-i", f"testsrc2=size={WIDTH}x{HEIGHT}:rate={FPS}:duration={CLIP_SECONDS}"]
    command += ["-f", "lavfi", "-i", f"sine=frequency=1000:sample_rate=48000:duration={CLIP_SECONDS}"]
    command += ["-c:v", "libx264", "-preset", "veryfast", "-g", str(2 * FPS), "-pix_fmt", "yuv420p"]
    command += ["-c:a", "aac", "-ac", "2", "-b:a", "128k", str(path)]
    subprocess.run(command, check=True, timeout=300)


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def _running(command: list[str], ready: Callable[[], bool] = lambda: True) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{command[0]} did not start (exit status {process.poll()})")
            time.sleep(0.05)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _free_display() -> int:
    for number in range(180, 240):
        if not os.path.exists(f"/tmp/.X11-unix/X{number}") and not os.path.exists(f"/tmp/.X{number}-lock"):
            return number
    raise RuntimeError("no free X display number in :180..:239")


def run(options: BenchOptions) -> dict[str, Any]:
    from compositord.daemon.engine.sources.capture import CaptureSource
    from compositord.daemon.engine.sources.stream_in import StreamInSource
    from compositord.daemon.engine.sources.video_file import VideoFileSource

    seconds = options.seconds if options.seconds is not None else (1.0 if options.quick else 10.0)
    ffmpeg, xvfb = shutil.which("ffmpeg"), shutil.which("Xvfb")
    if ffmpeg is None:
        raise SystemExit("compositord bench ingest: needs the ffmpeg command (to make the clip and send the stream)")
    cases: dict[str, Any] = {}
    peers: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    cpu_before, wall_before = time.process_time(), time.monotonic()
    _RenderLoopStandIn(None).run_for(seconds)
    idle_cpu_per_s = (time.process_time() - cpu_before) / (time.monotonic() - wall_before)
    with tempfile.TemporaryDirectory(prefix="compositord-bench-ingest-") as scratch:
        clip = Path(scratch) / "clip.mp4"
        _make_clip(ffmpeg, clip)
        cases["file"] = _measure(lambda: VideoFileSource({"path": clip.name}, scratch), seconds, idle_cpu_per_s)
        cases["file_no_audio"] = _measure(
            lambda: VideoFileSource({"path": clip.name, "audio": False}, scratch), seconds, idle_cpu_per_s
        )
        if options.compare:
            play = [ffmpeg, "-nostdin", "-re", "-stream_loop", "-1", "-i", str(clip)]
            peers["file"] = _peer(lambda s: [*play, "-t", f"{s:g}", "-f", "null", "-"], seconds)
        port = _free_udp_port()
        sender = [ffmpeg, "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(clip), "-c", "copy"]
        sender += ["-f", "mpegts", f"udp://127.0.0.1:{port}?pkt_size=1316"]
        receive_params = {"url": f"udp://127.0.0.1:{port}", "latency_ms": 100}
        with _running(sender):
            cases["stream_in"] = _measure(lambda: StreamInSource(receive_params), seconds, idle_cpu_per_s)
            if options.compare:
                receive = [ffmpeg, "-nostdin", "-analyzeduration", "500000", "-fflags", "nobuffer"]
                receive += ["-i", f"udp://127.0.0.1:{port}"]
                peers["stream_in"] = _peer(lambda s: [*receive, "-t", f"{s:g}", "-f", "null", "-"], seconds)
        if xvfb is None:
            skipped["capture"] = "no Xvfb command"
        else:
            number = _free_display()
            screen = [xvfb, f":{number}", "-screen", "0", f"{WIDTH}x{HEIGHT}x24", "-nolisten", "tcp"]
            with _running(screen, ready=lambda: os.path.exists(f"/tmp/.X11-unix/X{number}")):
                capture_params = {
                    "source": "x11",
                    "display": f":{number}",
                    "width": WIDTH,
                    "height": HEIGHT,
                    "frame_rate": FPS,
                    "draw_mouse": False,
                }
                cases["capture"] = _measure(lambda: CaptureSource(capture_params), seconds, idle_cpu_per_s)
                if options.compare:
                    grab = [ffmpeg, "-nostdin", "-f", "x11grab", "-framerate", str(FPS), "-video_size", f"{WIDTH}x{HEIGHT}"]
                    grab += ["-draw_mouse", "0", "-i", f":{number}"]
                    peers["capture"] = _peer(lambda s: [*grab, "-t", f"{s:g}", "-pix_fmt", "yuv420p", "-f", "null", "-"], seconds)
    result: dict[str, Any] = {
        "input": f"{WIDTH}x{HEIGHT} at {FPS} fps; H.264 + AAC 48 kHz stereo (file, stream)",
        "seconds": seconds,
        "idle_core_percent": round(100 * idle_cpu_per_s, 2),
        "cases": cases,
        "peers": peers,
        "skipped": skipped,
    }
    for name, case in cases.items():
        peer = peers.get(name)
        versus = ""
        if peer is not None:
            versus = f"; ffmpeg alone {peer['cpu_ms_per_frame']:.2f} ms/frame ({peer['core_percent']:.0f}% of a core)"
        sound = "" if not case["sound"] else f" with sound (underruns {case['audio_underrun_ms']} ms)"
        options.say(
            f"ingest {name}: {case['cpu_ms_per_frame']} ms CPU/frame, {case['core_percent']}% of a core, "
            f"{case['fps']} fps{sound}{versus}"
        )
    for name, reason in skipped.items():
        options.say(f"ingest {name}: skipped ({reason})")
    return result
