"""video::file's sound: bus format and frequency, sync with the pictures (a burst on each white flash,
across loop passes), files without sound, the ``audio`` param.

The tests drive the source like the render loop and the mixer do: every output frame ``frame(t)``, then
``audio.read(count, at=audio_time(t))`` for the samples up to the next frame (contiguous blocks, the
mixer's rule), so the sound read is what an output would carry beside the pictures shown.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import trio

from compositord.daemon.engine.audio.bus import BUS_CHANNELS, BUS_DTYPE, BUS_SAMPLE_RATE, samples_until
from compositord.daemon.engine.loop import RenderLoop
from compositord.daemon.engine.sources.video_file import VideoFileSource
from compositord.daemon.state.model import ConnectionRecord, NodeRecord, SessionRecord
from compositord.testing.media import i420_to_rgb, is_flash, write_clip, write_clip_with_sound
from compositord.tests.engine_recorder import EventRecorder

OUTPUT_FPS = 50


@pytest.fixture
def sources(tmp_path: Path) -> Any:
    made: list[VideoFileSource] = []

    def make(params: dict[str, Any]) -> VideoFileSource:
        source = VideoFileSource(params, tmp_path)
        made.append(source)
        return source

    yield make
    for source in made:
        source.close(timeout=2.0)
        assert not source.decoder_alive


def wait_for_first_frame(source: VideoFileSource, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while source.frame() is None:
        assert time.monotonic() < deadline, f"no frame within {timeout} s (error: {source.error})"
        time.sleep(0.005)


def play(source: VideoFileSource, seconds: float) -> tuple[list[tuple[float, bool]], np.ndarray]:
    """Output frames at OUTPUT_FPS for ``seconds``: (t, the picture is a flash) per frame, and the sound read
    beside them (contiguous; sample 0 is at t = 0 on the loop's clock)."""
    pictures: list[tuple[float, bool]] = []
    blocks: list[np.ndarray] = []
    is_flash(np.zeros((2, 2, 3)))  # the first call of the analysis is slow; a render loop's frames are not
    started = time.monotonic()
    read_to = 0
    for index in range(round(seconds * OUTPUT_FPS)):
        t = index / OUTPUT_FPS
        delay = started + t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        frame = source.frame(t)
        flash = frame is not None and is_flash(i420_to_rgb(np.asarray(frame.data), frame.width, frame.height, frame.color_matrix))
        pictures.append((t, flash))
        end = samples_until(t + 1 / OUTPUT_FPS)
        buffer = source.audio
        assert buffer is not None
        blocks.append(buffer.read(end - read_to, at=source.audio_time(t)))
        read_to = end
    return pictures, np.concatenate(blocks)


def dominant_frequency(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.shape[0])))
    return float(np.fft.rfftfreq(samples.shape[0], 1 / BUS_SAMPLE_RATE)[int(np.argmax(spectrum))])


def onsets(active: np.ndarray, times: np.ndarray, quiet_before: int) -> list[float]:
    """Times where ``active`` turns on after at least ``quiet_before`` inactive entries."""
    found = []
    quiet = quiet_before
    for on, at in zip(active, times, strict=True):
        if on and quiet >= quiet_before:
            found.append(float(at))
        quiet = 0 if on else quiet + 1
    return found


def test_sound_reaches_the_buffer_in_the_bus_format_at_its_frequency(tmp_path: Path, sources: Any) -> None:
    # 44.1 kHz mono FLAC: the source resamples and upmixes to the bus (48 kHz stereo float32).
    write_clip_with_sound(tmp_path / "tone.mkv", frames=25, fps=25, tone_hz=1000.0, level=0.5)
    source = sources({"path": "tone.mkv"})
    wait_for_first_frame(source)
    assert source.audio is not None
    decoded = source.frames_decoded
    _, sound = play(source, 1.0)
    # Reading ahead for the sound does not change the pictures' pace: 25 a second, never faster (a loaded
    # 2-core machine may deliver a few late).
    assert 15 <= source.frames_decoded - decoded <= 27
    assert sound.dtype == BUS_DTYPE and sound.shape[1] == BUS_CHANNELS
    steady = sound[BUS_SAMPLE_RATE // 4 :]  # past the start, where the first block may lead with silence
    assert np.array_equal(steady[:, 0], steady[:, 1])  # mono to both channels
    assert dominant_frequency(steady[:, 0]) == pytest.approx(1000.0, abs=5.0)
    # FFmpeg's mono-to-stereo upmix keeps the level (peak 0.5) within its filter's ripple; a loop seam may
    # cut one sine period, so the level is judged on the loudest samples.
    assert np.percentile(np.abs(steady[:, 0]), 99.5) == pytest.approx(0.5, abs=0.03)
    stats = source.stats()["audio"]
    assert stats["written_samples"] > 0.9 * BUS_SAMPLE_RATE
    assert set(stats) >= {"buffered_ms", "underrun_samples", "dropped_samples", "resyncs"}


@pytest.mark.skipif("libx264" not in av.codecs_available, reason="this PyAV build has no libx264 encoder")
def test_each_burst_plays_with_its_flash_within_one_frame_across_loop_passes(tmp_path: Path, sources: Any) -> None:
    # H.264 + AAC in MP4 (AAC's priming samples start before zero): a flash every 10 frames (0.4 s at 25 fps)
    # with a 1 kHz burst at its start; 30 frames = 1.2 s a pass, looped.
    fps = 25
    write_clip_with_sound(
        tmp_path / "sync.mp4",
        frames=30,
        fps=fps,
        codec="libx264",
        audio_codec="aac",
        sample_rate=48_000,
        layout="stereo",
        flash_every=10,
        burst_ms=60.0,
        level=0.5,
    )
    source = sources({"path": "sync.mp4"})  # loop defaults to true
    wait_for_first_frame(source)
    pictures, sound = play(source, 3.6)  # three passes
    times = np.array([t for t, _ in pictures])
    flashes = onsets(np.array([flash for _, flash in pictures]), times, quiet_before=5)
    envelope = np.abs(sound[:, 0]).reshape(-1, 48).max(axis=1) > 0.1  # 1 ms steps
    bursts = onsets(envelope, np.arange(envelope.shape[0]) / 1000, quiet_before=100)
    assert len(flashes) >= 7, (flashes, bursts)  # 9 in 3.6 s
    # The first flash is at the very start, where the picture may be overtaken while the file opens.
    bursts = [b for b in bursts if b > 0.2]
    frame = 1 / fps
    unmatched = [b for b in bursts if not any(abs(b - f) <= frame for f in flashes)]
    assert unmatched == [], f"bursts {bursts} vs flashes {flashes}"
    missing = [f for f in flashes if f > 0.2 and not any(abs(b - f) <= frame for b in bursts)]
    assert missing == [], f"flashes without their burst: {missing} (bursts {bursts})"
    assert any(f > 1.2 for f in flashes) and any(f > 2.4 for f in flashes)  # aligned after each loop
    assert source.error is None


def test_a_file_without_sound_has_no_audio(tmp_path: Path, sources: Any) -> None:
    write_clip(tmp_path / "silent.mkv", frames=5, fps=25)
    source = sources({"path": "silent.mkv"})
    wait_for_first_frame(source)
    assert source.audio is None
    assert "audio" not in source.stats()


@pytest.mark.parametrize("has_sound", [True, False])
def test_the_sound_is_announced_until_the_file_is_open(
    tmp_path: Path, sources: Any, monkeypatch: pytest.MonkeyPatch, has_sound: bool
) -> None:
    # An output has sound when its first frame has: a recording whose first frame comes before the file is
    # open must still get a track for the file's sound. Opening is held here until the test lets it go.
    if has_sound:
        write_clip_with_sound(tmp_path / "clip.mkv", frames=25, fps=25, tone_hz=440.0)
    else:
        write_clip(tmp_path / "clip.mkv", frames=25, fps=25)
    may_open = threading.Event()
    real_open = VideoFileSource._open

    def held_open(self: VideoFileSource, path: str) -> Any:
        assert may_open.wait(10.0)
        return real_open(self, path)

    monkeypatch.setattr(VideoFileSource, "_open", held_open)
    source = sources({"path": "clip.mkv"})
    try:
        assert source.audio is not None  # not open yet: announced
        assert source.audio.read(480, at=0.0).shape == (480, BUS_CHANNELS)  # silence meanwhile, never a wait
    finally:
        may_open.set()  # a failure above must not leave the decoder held for the fixture's close
    wait_for_first_frame(source)
    assert (source.audio is not None) == has_sound  # known once open
    source.configure({"path": "clip.mkv", "loop": True, "seek_seconds": 0.0, "audio": False})
    assert source.audio is None  # the param still decides


def test_the_audio_param_leaves_the_sound_out_and_back_in_without_restarting(tmp_path: Path, sources: Any) -> None:
    write_clip_with_sound(tmp_path / "tone.mkv", frames=50, fps=25, tone_hz=440.0)
    source = sources({"path": "tone.mkv", "audio": False})
    wait_for_first_frame(source)
    assert source.audio is None and "audio" not in source.stats()
    decoded = source.frames_decoded
    source.configure({"path": "tone.mkv", "loop": True, "seek_seconds": 0.0, "audio": True})
    assert source.audio is not None
    _, sound = play(source, 0.8)
    assert source.frames_decoded > decoded  # the same playback went on
    assert dominant_frequency(sound[BUS_SAMPLE_RATE // 2 :, 0]) == pytest.approx(440.0, abs=5.0)


@pytest.mark.gl
async def test_the_render_loop_reports_the_sound_buffer_in_the_file_nodes_stats(tmp_path: Path) -> None:
    write_clip_with_sound(tmp_path / "tone.mkv", frames=25, fps=25)
    write_clip(tmp_path / "silent.mkv", frames=5, fps=25)
    layers = {pin: {"rect": {"x": 0, "y": 0, "width": 64, "height": 48}} for pin in ("in_0", "in_1")}
    session = SessionRecord(
        "s1",
        "file",
        {
            "tone": NodeRecord("tone", "video::file", {"path": "tone.mkv"}),
            "silent": NodeRecord("silent", "video::file", {"path": "silent.mkv"}),
            "comp": NodeRecord("comp", "video::compositor", {"width": 64, "height": 48, "fps": 25, "layers": layers}),
        },
        [ConnectionRecord("tone", "out", "comp", "in_0"), ConnectionRecord("silent", "out", "comp", "in_1")],
    )
    recorder = EventRecorder()  # checks every event is plain data (what crosses to the control process)
    loop = RenderLoop(session, recorder, trio_token=trio.lowlevel.current_trio_token(), asset_dir=tmp_path)
    loop.start()
    try:
        await loop.wait_first_frame()
        with trio.fail_after(10):
            while not {"tone", "silent"} <= {event.node_id for event in recorder.stats}:
                await trio.sleep(0.05)
    finally:
        await trio.to_thread.run_sync(loop.stop, 5.0)
    by_node = {event.node_id: event.stats for event in recorder.stats}
    assert by_node["tone"]["audio"]["written_samples"] > 0
    assert "audio" not in by_node["silent"]
    assert recorder.errors == []


def test_sound_nobody_reads_never_holds_the_pictures_and_stays_bounded(tmp_path: Path, sources: Any) -> None:
    # No mixer reads the buffer: it fills to its capacity (2 s) and drops its oldest sound; the decoder
    # writes without waiting, so the pictures go on at the file's rate.
    write_clip_with_sound(tmp_path / "tone.mkv", frames=25, fps=25)
    source = sources({"path": "tone.mkv"})
    wait_for_first_frame(source)
    decoded = source.frames_decoded
    time.sleep(3.0)
    assert source.frames_decoded - decoded >= 45  # 75 at 25 fps; a loaded machine shows fewer, never none
    stats = source.stats()["audio"]
    assert stats["buffered_ms"] <= 2000.0
    assert stats["dropped_samples"] > 0
