"""Sync through the whole engine: a file's picture and sound, composited, mixed and recorded.

A clip flashes white once a second with a tone burst that starts on the same
sample (``testing.media.write_clip_with_sound``). It plays through
``video::file`` (its sound decoded and timed on the pictures' clock), a
compositor (its mixer), and ``sink::file`` (H.264 with AAC in MP4); the
recording is decoded and every burst must start within one video frame of
its flash, on the container's own clock (AAC's priming as the MP4 signals
it, not guessed). This is issue 17's sync test in CI; docs/RELIABILITY.md
"A/V sync" has the 10-minute figure.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import av
import numpy as np

from compositord.daemon.state.model import ConnectionRecord, NodeRecord, SessionRecord
from compositord.testing.media import write_clip_with_sound
from compositord.tests.sink_helpers import running_loop, wait_frames_written

FPS = 30
# CI records 6 s; docs/RELIABILITY.md's long figure comes from COMPOSITORD_SYNC_SECONDS=600 (in real time).
SECONDS = int(os.environ.get("COMPOSITORD_SYNC_SECONDS", "6"))
WIDTH, HEIGHT = 320, 240  # the clip's 4:3, so the file fills the canvas and a flash whitens all of it


def session(*, recording: bool) -> SessionRecord:
    nodes = {
        "clip": NodeRecord("clip", "video::file", {"path": "clip.mkv", "loop": True}),
        "comp": NodeRecord("comp", "video::compositor", {"width": WIDTH, "height": HEIGHT, "fps": FPS}),
    }
    connections = [ConnectionRecord("clip", "out", "comp", "in_0")]
    if recording:
        nodes["rec"] = NodeRecord("rec", "sink::file", {"path": "out.mp4", "preset": "ultrafast"})
        connections.append(ConnectionRecord("comp", "out", "rec", "in"))
    return SessionRecord("s1", "sync", nodes, connections)


def onsets(times: np.ndarray, loud: np.ndarray, quiet_s: float) -> list[float]:
    """Times where ``loud`` turns true after at least ``quiet_s`` of false."""
    found: list[float] = []
    last_loud = -1e9
    for time, is_loud in zip(times, loud, strict=True):
        if is_loud:
            if time - last_loud >= quiet_s:
                found.append(float(time))
            last_loud = time
    return found


def decoded_onsets(path: Path) -> tuple[list[float], list[float], dict[str, Any]]:
    """Flash onsets (the picture's mean luma near white) and burst onsets (the sound's level past a quarter of
    full scale after 0.3 s of quiet), each on the container's clock."""
    frame_times: list[float] = []
    white: list[bool] = []
    sound: list[tuple[float, np.ndarray]] = []
    with av.open(str(path)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        rate = int(audio.codec_context.sample_rate)
        info: dict[str, Any] = {"audio_codec": audio.codec_context.name, "sample_rate": rate}
        for packet in container.demux(video, audio):
            for frame in packet.decode():
                if isinstance(frame, av.VideoFrame):
                    assert frame.time is not None
                    frame_times.append(frame.time)
                    white.append(float(frame.to_ndarray(format="gray").mean()) > 200)
                elif isinstance(frame, av.AudioFrame):
                    assert frame.time is not None
                    samples = frame.to_ndarray()
                    mono = (
                        samples.mean(axis=0) if frame.format.is_planar else samples.reshape(-1, frame.layout.nb_channels).mean(1)
                    )
                    sound.append((frame.time, np.abs(mono)))
    sample_times = np.concatenate([start + np.arange(len(level)) / rate for start, level in sound])
    levels = np.concatenate([level for _start, level in sound])
    flashes = onsets(np.array(frame_times), np.array(white), quiet_s=0.3)
    bursts = onsets(sample_times, levels > 0.25, quiet_s=0.3)
    return flashes, bursts, info


async def test_a_files_bursts_stay_on_its_flashes_through_the_mixer_and_the_recording(tmp_path: Path) -> None:
    # 1.2 s a pass (the file loops): flashes at 0, 0.6 s... of each pass, a 60 ms burst on each.
    write_clip_with_sound(
        tmp_path / "clip.mkv", frames=36, fps=FPS, width=64, height=48, flash_every=18, burst_ms=60.0, level=0.5
    )
    # The recording is in the pipeline from its start, before the file is open: the file's sound is
    # announced until then, so the output has a track for it (an output has sound when its first frame has).
    async with running_loop(session(recording=True), tmp_path) as (loop, _recorder):
        await wait_frames_written(loop, "rec", FPS * SECONDS, timeout=60 + 2 * SECONDS)
    flashes, bursts, info = decoded_onsets(tmp_path / "out.mp4")
    assert info["audio_codec"] == "aac" and info["sample_rate"] == 48_000
    frame = 1 / FPS
    settled = [f for f in flashes if f >= 0.5]  # the first half second: the file's decoder and sound start up
    assert len(settled) >= 6, (flashes, bursts)
    offsets = [min((b - f for b in bursts), key=abs) for f in settled]
    print(f"sync: {len(settled)} flashes, worst burst minus flash {1000 * max(map(abs, offsets)):.1f} ms")
    assert all(abs(offset) <= frame for offset in offsets), f"burst minus flash (s): {offsets}"
    stray = [b for b in bursts if b >= 0.5 and not any(abs(b - f) <= frame for f in flashes)]
    assert stray == [], f"bursts without a flash: {stray}; flashes {flashes}"
