"""``compositord bench mixer``: what a compositor's sound costs the render thread per frame, with 8 inputs.

Exactly the render thread's share of the work (``loop.RenderLoop._mix_audio``
without the session lookups): the loop's per-frame block (``FrameAudio``), one
read of each of 8 sources' ``AudioBuffer`` (live reads), their gains, the sum,
the clip, the conversion to the output format and the meters. The sources'
own work (decoding, resampling to the bus format, writing their buffers)
happens on their threads in the daemon; here each buffer is refilled between
frames, outside the timed part. Every source is a different sine, so nothing
is silent and the meters see real sound.

Configurations (each ``--frames`` frames x ``--iterations``):

- ``30fps-48k-stereo``: 1600 samples a frame, no resampling (the default format);
- ``30fps-44k1-stereo``: the same through the compositor's ``av.AudioResampler``;
- ``60fps-48k-mono``: 800 samples a frame, downmixed;
- ``30fps-48k-ramps``: every input's gain changes every frame (a fader ride on
  all 8 at once, follow_video during a transition): the per-sample gain ramps.

Reported per configuration: the summary form (throughput in frames per
second of mixing alone) and the per-frame time's p50 / p99 / max in
microseconds, against a 30 fps frame period of 33 333 µs.

Then the same in place (``in_loop``): a real ``RenderLoop`` (llvmpipe) with 8
``audio::tone`` inputs and a colorbars background in a 1280x720 30 fps
compositor, for ``--seconds`` (default 5, ``--quick`` 1) after a second of
warm-up; reported from the compositor's own stats: ``audio_mix_ms_p50`` /
``audio_mix_ms_max`` (the render thread's time in ``_mix_audio``) beside
``render_ms_p50`` (the whole frame), and the frames the loop dropped. The
mixer's time there includes making the 8 tones (``audio::tone`` computes its
sine when it is read).
Not part of ``all``: no peer does this.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from compositord.daemon.engine.audio.buffer import AudioBuffer
from compositord.daemon.engine.audio.bus import BUS_SAMPLE_RATE
from compositord.daemon.engine.audio.frame_audio import FrameAudio
from compositord.daemon.engine.audio.mixer import CompositorMixer, InputSettings
from compositord.perf.measure import Timing, percentiles
from compositord.perf.options import BenchOptions

NAME = "mixer"
INPUTS = 8
CONFIGS: tuple[tuple[str, int, int, str, bool], ...] = (
    # (name, fps, sample rate, channels, gains change every frame)
    ("30fps-48k-stereo", 30, 48000, "stereo", False),
    ("30fps-44k1-stereo", 30, 44100, "stereo", False),
    ("60fps-48k-mono", 60, 48000, "mono", False),
    ("30fps-48k-ramps", 30, 48000, "stereo", True),
)


class _Source:
    """A source with sound whose thread has filled its buffer: ``refill`` stands for that thread."""

    def __init__(self, index: int) -> None:
        self.audio = AudioBuffer()
        self._frequency = 220.0 * (index + 1)
        self._next = 0

    def refill(self, count: int) -> None:
        k = np.arange(self._next, self._next + count, dtype=np.float64)
        mono = (0.1 * np.sin(2 * np.pi * self._frequency * k / BUS_SAMPLE_RATE)).astype(np.float32)
        self.audio.write(np.repeat(mono[:, None], 2, axis=1))
        self._next += count


def _run_config(fps: int, rate: int, layout: str, ramps: bool, frames: int, iterations: int) -> tuple[Timing, list[float]]:
    timing = Timing(NAME, frames)
    per_frame_us: list[float] = []
    pins = [f"in_{i}" for i in range(INPUTS)]
    for _ in range(iterations):
        sources = {pin: _Source(i) for i, pin in enumerate(pins)}
        mixer = CompositorMixer()
        clock = FrameAudio()
        block = BUS_SAMPLE_RATE // fps
        wall = 0.0
        for frame in range(frames + 5):  # 5 frames of warm-up (the resampler's first allocations)
            for source in sources.values():
                source.refill(block)
            gain = -6.0 - (frame % 12) if ramps else -6.0
            settings = {pin: InputSettings(gain_db=gain) for pin in pins}
            started = time.perf_counter()
            clock.next_frame(frame / fps, 1 / fps, frame / fps)
            inputs = {}
            for pin, source in sources.items():
                samples = clock.of_source(pin, source)
                if samples is not None:
                    inputs[pin] = samples
            mixed = mixer.mix(clock.start, inputs, settings, sample_rate=rate, layout=layout)
            if mixed is not None:
                mixer.hold(mixed)
                mixer.take()
            if frame % max(1, fps // 10) == 0:
                mixer.reading(pins)  # the 10 Hz meter reading
            elapsed = time.perf_counter() - started
            if frame >= 5:
                wall += elapsed
                per_frame_us.append(elapsed * 1e6)
        timing.walls.append(wall)
    return timing, per_frame_us


def _renewed(before: dict[str, Any], after: dict[str, Any]) -> bool:
    return before["render_histogram"] != after["render_histogram"]


def _in_loop(seconds: float) -> dict[str, Any]:
    import tempfile
    from pathlib import Path

    import trio

    from compositord.daemon.engine import api
    from compositord.daemon.engine.loop import RenderLoop
    from compositord.daemon.state.model import ConnectionRecord, NodeRecord, SessionRecord

    nodes = {
        "bars": NodeRecord("bars", "video::colorbars", {"width": 1280, "height": 720}),
        "comp": NodeRecord("comp", "video::compositor", {"width": 1280, "height": 720, "fps": 30, "num_inputs": INPUTS + 1}),
    }
    connections = [ConnectionRecord("bars", "out", "comp", "in_0")]
    for index in range(INPUTS):
        node_id = f"tone{index}"
        nodes[node_id] = NodeRecord(node_id, "audio::tone", {"frequency_hz": 220.0 * (index + 1), "level_dbfs": -20.0})
        connections.append(ConnectionRecord(node_id, "out", "comp", f"in_{index + 1}"))
    stats: list[dict[str, Any]] = []

    class Events:
        def on_event(self, event: api.Event) -> None:
            if isinstance(event, api.NodeStats) and event.node_id == "comp" and "render_ms_p50" in event.stats:
                stats.append(dict(event.stats))

    async def main() -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as assets:
            loop = RenderLoop(
                SessionRecord("bench", "mixer", nodes, connections),
                Events(),
                trio_token=trio.lowlevel.current_trio_token(),
                asset_dir=Path(assets),
            )
            loop.start()
            try:
                await loop.wait_first_frame()
                await trio.sleep(1.0)
                before = loop.statistics()
                stats.clear()
                await trio.sleep(seconds)
                after = loop.statistics()
            finally:
                await trio.to_thread.run_sync(loop.stop, 10.0)
        # The stats come 10 times a second (the meters); the percentiles are renewed once a second.
        full = [s for before, s in zip([None, *stats], stats, strict=False) if before is None or _renewed(before, s)]
        return {
            "seconds": seconds,
            "frames_rendered": after.frames_rendered - before.frames_rendered,
            "frames_dropped": after.frames_dropped - before.frames_dropped,
            "audio_mix_ms_p50": [s["audio_mix_ms_p50"] for s in full],
            "audio_mix_ms_max": [s["audio_mix_ms_max"] for s in full],
            "render_ms_p50": [s["render_ms_p50"] for s in full],
            "meter_events_per_s": round(len(stats) / seconds, 1),
        }

    return trio.run(main)


def run(options: BenchOptions) -> dict[str, Any]:
    frames = options.frames_or(3000, 30)
    iterations = options.iterations_or(3, 1)
    results: dict[str, Any] = {}
    for name, fps, rate, layout, ramps in CONFIGS:
        timing, per_frame_us = _run_config(fps, rate, layout, ramps, frames, iterations)
        spread = percentiles(per_frame_us, (50, 99))
        options.say(f"--- {name}: {INPUTS} inputs, {BUS_SAMPLE_RATE // fps} bus samples a frame", timing.summary())
        options.say(f"per-frame    : p50 {spread['p50']} µs  p99 {spread['p99']} µs  max {spread['max']} µs")
        results[name] = {**timing.as_dict(), "per_frame_us": spread, "inputs": INPUTS, "video_fps": fps, "sample_rate": rate}
    seconds = options.seconds if options.seconds is not None else (1.0 if options.quick else 5.0)
    in_loop = _in_loop(seconds)
    options.say(
        f"--- in_loop: {INPUTS} tones into a 1280x720 30 fps compositor, {seconds:g} s",
        f"audio_mix_ms p50 per second: {in_loop['audio_mix_ms_p50']}  max: {in_loop['audio_mix_ms_max']}",
        f"render_ms p50 per second: {in_loop['render_ms_p50']}  frames dropped: {in_loop['frames_dropped']}",
    )
    return {"ours": results, "in_loop": in_loop}
