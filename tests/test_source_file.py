"""video::file: decoding (pixels of known frames), pacing by pts, loop / once, seek, live param changes.

Clips are made by ``testing/media.py`` (64x48 or so, lossless FFV1 unless said
otherwise); a frame's number is readable from its pixels. Pixel tolerance: 3
levels of 255 in flat areas after limited-range BT.601 YUV -> RGB (the
clips are lossless, the error is the RGB -> YUV -> RGB rounding).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import trio

from compositord.daemon.engine.loop import RenderLoop
from compositord.daemon.engine.render.frames import SourceFrame
from compositord.daemon.engine.sources.handoff import DueFrameQueue
from compositord.daemon.engine.sources.video_file import VideoFileSource
from compositord.daemon.state.model import ConnectionRecord, NodeRecord, SessionRecord
from compositord.testing.media import BLUE, RED, frame_number_of, grey_of, i420_to_rgb, pattern, write_clip
from compositord.tests.engine_recorder import EventRecorder

TOLERANCE = 3.0


@pytest.fixture
def sources(tmp_path: Path) -> Any:
    made: list[VideoFileSource] = []

    def make(params: dict[str, Any]) -> VideoFileSource:
        source = VideoFileSource(params, tmp_path)  # the clips are written into tmp_path, the asset directory
        made.append(source)
        return source

    yield make
    for source in made:
        source.close(timeout=2.0)
        assert not source.decoder_alive, "close() stops the decoder thread"


def rgb_of(frame: SourceFrame) -> np.ndarray:
    assert frame.pixel_format == "i420"
    return i420_to_rgb(np.asarray(frame.data), frame.width, frame.height, frame.color_matrix)


def wait_frame(
    source: VideoFileSource, predicate: Callable[[SourceFrame], bool] = lambda f: True, timeout: float = 5.0
) -> SourceFrame:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frame = source.frame()
        if frame is not None and predicate(frame):
            return frame
        time.sleep(0.002)
    raise AssertionError(f"no matching frame within {timeout} s (error: {source.error})")


def watch(source: VideoFileSource, seconds: float) -> list[tuple[int, float]]:
    """(frame number, seconds since start) of every new frame the render side sees, polled every 2 ms."""
    seen: list[tuple[int, float]] = []
    last_serial = None
    start = time.monotonic()
    while (now := time.monotonic()) - start < seconds:
        frame = source.frame()
        if frame is not None and frame.serial != last_serial:
            last_serial = frame.serial
            seen.append((frame_number_of(rgb_of(frame)), now - start))
        time.sleep(0.002)
    return seen


def test_decoded_frame_has_the_known_pixels(tmp_path: Path, sources: Any) -> None:
    clip = write_clip(tmp_path / "clip.mkv", frames=3, fps=30)
    source = sources({"path": clip.name, "loop": False})
    frame = wait_frame(source, lambda f: frame_number_of(rgb_of(f)) == 2)
    assert (frame.pixel_format, frame.width, frame.height, frame.opaque) == ("i420", 64, 48, True)
    assert np.asarray(frame.data).nbytes == 64 * 48 * 3 // 2  # tightly packed planes
    rgb = rgb_of(frame)
    # Flat interiors, away from the edges where 4:2:0 chroma mixes two colours.
    assert np.abs(rgb[4:20, 4:28] - RED).max() <= TOLERANCE
    assert np.abs(rgb[4:20, 36:60] - BLUE).max() <= TOLERANCE
    assert np.abs(rgb[28:44, 4:60] - grey_of(2)).max() <= TOLERANCE
    assert source.error is None


def test_row_padding_is_cut_off(tmp_path: Path, sources: Any) -> None:
    # 66 pixels wide: PyAV pads every plane's rows (line_size > width); the frame must not carry the padding.
    clip = write_clip(tmp_path / "wide.mkv", frames=1, width=66, height=50)
    with av.open(str(clip)) as container:
        decoded = next(container.decode(video=0))
        assert any(plane.line_size > plane.width for plane in decoded.planes), "the test needs a padded layout"
    source = sources({"path": clip.name, "loop": False})
    frame = wait_frame(source)
    assert (frame.width, frame.height) == (66, 50)
    assert np.asarray(frame.data).nbytes == 66 * 50 + 2 * 33 * 25
    rgb = rgb_of(frame)
    expected = pattern(0, 66, 50).astype(float)
    # Shifted rows (padding left in) would break every row but the first; check the whole interior of each area.
    for rows, cols in ((slice(2, 22), slice(2, 30)), (slice(2, 22), slice(36, 64)), (slice(28, 48), slice(2, 64))):
        assert np.abs(rgb[rows, cols] - expected[rows, cols]).max() <= TOLERANCE


def test_plays_at_the_file_rate_and_loops(tmp_path: Path, sources: Any) -> None:
    clip = write_clip(tmp_path / "clip.mkv", frames=10, fps=30)  # one pass: 1/3 s
    source = sources({"path": clip.name})  # loop defaults to true
    seen = watch(source, 1.0)
    numbers = [n for n, _ in seen]
    # 30 frames a second for 1 s: never faster than the file (the upper bound is the point); a loaded
    # 2-core CI machine may deliver late, so the lower bound only says it plays on.
    assert 15 <= len(seen) <= 32, seen
    wraps = [i for i in range(1, len(numbers)) if numbers[i] < numbers[i - 1]]
    assert len(wraps) >= 1, numbers
    assert all(numbers[i] == 0 for i in wraps), numbers  # each pass starts at the first frame
    for i in range(1, len(numbers)):
        if i not in wraps:
            assert numbers[i] > numbers[i - 1], numbers
    # The clock continues across a loop: the frame after 9 is shown one frame period after it, not at once.
    gaps = [seen[i][1] - seen[i - 1][1] for i in wraps]
    assert min(gaps) > 0.01, gaps
    assert source.error is None


def test_once_holds_the_last_frame(tmp_path: Path, sources: Any) -> None:
    clip = write_clip(tmp_path / "clip.mkv", frames=6, fps=30)
    source = sources({"path": clip.name, "loop": False})
    last = wait_frame(source, lambda f: frame_number_of(rgb_of(f)) == 5, timeout=3.0)
    time.sleep(0.4)  # past the end: nothing more comes, the last frame stays (same serial: no re-upload)
    assert source.frame() is last
    assert source.stats()["frames_decoded"] == 6
    # Looping switched on later starts again from the beginning.
    source.configure({"path": clip.name, "loop": True, "seek_seconds": 0.0})
    assert frame_number_of(rgb_of(wait_frame(source, lambda f: f.serial != last.serial))) == 0


def test_seek_starts_at_the_position(tmp_path: Path, sources: Any) -> None:
    clip = write_clip(tmp_path / "clip.mkv", frames=13, fps=10)  # 1.3 s
    source = sources({"path": clip.name, "loop": False, "seek_seconds": 1.2})
    first = wait_frame(source)
    assert frame_number_of(rgb_of(first)) == 12  # the last frame: nothing else can come before the next seek
    # A new seek position applies to the running decoder (same thread, no new source).
    decoder = source._thread
    source.configure({"path": clip.name, "loop": False, "seek_seconds": 0.5})
    moved = wait_frame(source, lambda f: f.serial != first.serial)
    assert frame_number_of(rgb_of(moved)) == 5
    assert source._thread is decoder and decoder.is_alive()


@pytest.mark.skipif("libx264" not in av.codecs_available, reason="this PyAV build has no libx264 encoder")
def test_seek_in_h264_skips_to_the_frame_after_the_key_frame(tmp_path: Path, sources: Any) -> None:
    clip = write_clip(tmp_path / "clip.mp4", frames=15, fps=10, codec="libx264")  # key frames at 0, 5, 10
    source = sources({"path": clip.name, "loop": False, "seek_seconds": 0.7})
    first = wait_frame(source)
    assert frame_number_of(rgb_of(first)) == 7
    rgb = rgb_of(first)
    assert np.abs(rgb[4:20, 4:28] - RED).max() <= TOLERANCE  # lossless (qp 0): the same tolerance


def test_a_seek_past_the_end_is_an_error_until_corrected(tmp_path: Path, sources: Any) -> None:
    clip = write_clip(tmp_path / "clip.mkv", frames=5, fps=10)
    source = sources({"path": clip.name, "loop": True, "seek_seconds": 30.0})
    deadline = time.monotonic() + 3
    while source.error is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert source.error is not None and "seek_seconds 30" in source.error
    assert source.frame() is None
    source.configure({"path": clip.name, "loop": True, "seek_seconds": 0.2})
    assert frame_number_of(rgb_of(wait_frame(source))) == 2
    assert source.error is None


def test_a_new_path_plays_without_a_new_decoder(tmp_path: Path, sources: Any) -> None:
    first_clip = write_clip(tmp_path / "a.mkv", frames=10, fps=30)
    second_clip = write_clip(tmp_path / "b.mkv", frames=10, fps=30, first_number=20)
    source = sources({"path": "a.mkv"})
    wait_frame(source)
    decoder = source._thread
    source.configure({"path": second_clip.name, "loop": True, "seek_seconds": 0.0})
    frame = wait_frame(source, lambda f: frame_number_of(rgb_of(f)) >= 20)
    assert frame_number_of(rgb_of(frame)) in range(20, 30)
    assert source._thread is decoder and decoder.is_alive()
    assert first_clip.exists()
    # And no frame of the old file comes after the switch.
    assert all(n >= 20 for n, _ in watch(source, 0.3))


def test_frame_never_waits_for_the_decoder(tmp_path: Path, sources: Any) -> None:
    clip = write_clip(tmp_path / "slow.mkv", frames=4, fps=2)  # the decoder sleeps 0.5 s between frames
    source = sources({"path": clip.name})
    wait_frame(source)
    worst = 0.0
    for _ in range(300):
        started = time.perf_counter()
        source.frame()
        worst = max(worst, time.perf_counter() - started)
    # Waiting for the decoder would take up to 0.5 s; the bound leaves room for a busy machine's scheduling.
    assert worst < 0.05, f"frame() took {worst * 1000:.1f} ms"


@pytest.mark.gl
async def test_render_loop_composites_a_file_and_keeps_its_own_rate(tmp_path: Path) -> None:
    write_clip(tmp_path / "clip.mkv", frames=10, fps=10)  # 10 fps file into a 60 fps compositor
    session = SessionRecord(
        "s1",
        "file",
        {
            "clip": NodeRecord("clip", "video::file", {"path": "clip.mkv"}),
            "comp": NodeRecord(
                "comp",
                "video::compositor",
                {"width": 64, "height": 48, "fps": 60, "layers": {"in_0": {"rect": {"x": 0, "y": 0, "width": 64, "height": 48}}}},
            ),
        },
        [ConnectionRecord("clip", "out", "comp", "in_0")],
    )
    recorder = EventRecorder()
    loop = RenderLoop(session, recorder, trio_token=trio.lowlevel.current_trio_token(), asset_dir=tmp_path)
    loop.start()
    try:
        await loop.wait_first_frame()
        with trio.fail_after(10):
            while True:
                output = loop.latest_output("comp")
                if output is not None and frame_number_of(output.as_array()) == 3:
                    break
                await trio.sleep(0.005)
        rgba = output.as_array().astype(float)
        assert np.abs(rgba[4:20, 4:28, :3] - RED).max() <= TOLERANCE + 2  # plus the GPU's YUV -> RGB rounding
        assert np.abs(rgba[28:44, 4:60, :3] - grey_of(3)).max() <= TOLERANCE + 2
        before = loop.statistics().frames_rendered
        await trio.sleep(0.5)
        rendered = loop.statistics().frames_rendered - before
        assert rendered >= 15, f"the compositor kept its own rate: {rendered} frames in 0.5 s"  # 60 fps asked, a slow CI box
        assert recorder.errors == []
    finally:
        await trio.to_thread.run_sync(loop.stop, 5.0)
    assert not any(t.name.startswith("compositord-decode") and t.is_alive() for t in threading.enumerate()), (
        "decoder stopped with the loop"
    )


def test_due_frame_queue_hands_out_the_newest_frame_due_and_stays_bounded() -> None:
    queue: DueFrameQueue[str] = DueFrameQueue(3)
    queue.put(10.0, "a")
    queue.put(10.1, "b")
    queue.put(10.2, "c")
    assert queue.take(9.9) is None  # nothing due yet
    assert queue.take(10.15) == "b" and queue.dropped == 1  # "a" was overtaken before it was taken
    queue.put(10.3, "d")
    queue.put(10.4, "e")
    queue.put(10.5, "g")  # full (c, d, e wait): the oldest goes
    assert len(queue) == 3 and queue.dropped == 2
    assert queue.take(11.0) == "g" and queue.dropped == 4  # d and e overtaken
    queue.put(12.0, "f")
    queue.clear()
    assert queue.take(13.0) is None and len(queue) == 0
