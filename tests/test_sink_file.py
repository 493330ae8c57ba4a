"""sink::file: what the encoder wrote decodes with PyAV (frame count, size,
monotonic timestamps, the known colour within a tolerance); the file is
finished on stop and when its node is removed or retuned; a retune or a
restart never overwrites an earlier recording unless ``if_exists`` says so."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import av
import pytest
import trio

from compositord.daemon.engine import api
from compositord.daemon.engine.sinks.base import Sink
from compositord.daemon.engine.sinks.encoding import ENCODERS
from compositord.daemon.engine.sinks.file import FileSink
from compositord.daemon.state.model import NodeRecord
from compositord.tests.sink_helpers import (
    H,
    W,
    assert_colour,
    decode,
    running_loop,
    sink_session,
    wait_frames_written,
    wait_until,
)

pytestmark = pytest.mark.gl

# H.264 at 160x90 and 1 Mbit/s is near-lossless on a flat colour; the colour travels
# RGB -> limited-range YUV (renderer) -> encoder -> decoder -> RGB (swscale): 8 levels of slack.
COLOUR_TOLERANCE = 8.0


@pytest.mark.parametrize(
    ("codec", "name", "output_format", "container"),
    [
        ("h264", "out.mp4", "nv12", "mp4"),
        ("vp9", "out.webm", "i420", "webm"),
        ("av1", "out.mkv", "rgba8", "matroska"),
    ],
)
async def test_encoded_file_decodes(tmp_path: Path, codec: str, name: str, output_format: str, container: str) -> None:
    if ENCODERS[codec] not in av.codecs_available:
        pytest.skip(f"this PyAV build has no {ENCODERS[codec]} encoder")
    path = tmp_path / name
    params = {"path": path.name, "codec": codec, "preset": "ultrafast", "bitrate_kbps": 1000}
    session = sink_session({"rec": ("sink::file", params)}, output_format=output_format)
    async with running_loop(session, tmp_path) as (loop, recorder):
        await wait_frames_written(loop, "rec", 12)
        sink = loop.sink("rec")
        assert isinstance(sink, FileSink)
    written = sink.frames_written
    decoded = decode(path)
    assert container in decoded.format_name.split(","), decoded.format_name
    assert decoded.codec in (codec, "libdav1d", "libaom-av1", "av1", "libvpx-vp9"), decoded.codec
    assert (decoded.width, decoded.height) == (W, H)
    assert len(decoded.frames) == written >= 12
    assert decoded.pts == sorted(decoded.pts) and len(set(decoded.pts)) == len(decoded.pts), "timestamps strictly increase"
    assert_colour(decoded.frames[len(decoded.frames) // 2], tolerance=COLOUR_TOLERANCE)
    assert recorder.error_of("rec") is None


async def test_removing_the_node_finishes_the_file(tmp_path: Path) -> None:
    path = tmp_path / "removed.mp4"
    session = sink_session({"rec": ("sink::file", {"path": path.name, "preset": "ultrafast"})})
    async with running_loop(session, tmp_path) as (loop, _recorder):
        await wait_frames_written(loop, "rec", 5)
        sink = loop.sink("rec")
        assert isinstance(sink, FileSink)
        without = session.copy()
        del without.nodes["rec"]
        without.connections = [c for c in without.connections if c.to_node != "rec"]
        loop.submit(api.TopologyUpdate(without))
        await wait_until(lambda: loop.sink("rec") is None)
        await trio_join(sink)
        decoded = decode(path)  # decodable while the pipeline still runs: the trailer is written
        assert len(decoded.frames) == sink.frames_written >= 5


async def test_new_params_keep_the_first_recording_and_write_the_next_beside_it(tmp_path: Path) -> None:
    path = tmp_path / "take.mp4"
    session = sink_session({"rec": ("sink::file", {"path": path.name, "preset": "ultrafast"})})
    async with running_loop(session, tmp_path) as (loop, recorder):
        await wait_frames_written(loop, "rec", 5)
        first = loop.sink("rec")
        assert isinstance(first, FileSink)
        assert first.stats()["path_written"] == "take.mp4"
        retuned = session.copy()
        node = retuned.nodes["rec"]
        retuned.nodes["rec"] = NodeRecord(node.node_id, node.kind, {**node.params, "bitrate_kbps": 2000}, node.seq + 1)
        loop.submit(api.TopologyUpdate(retuned))
        await wait_until(lambda: loop.sink("rec") is not first and loop.sink("rec") is not None)
        await wait_frames_written(loop, "rec", 5)
        second = loop.sink("rec")
        assert isinstance(second, FileSink)
        assert second.stats()["path_written"] == "take-1.mp4"
        await trio_join(first)
    assert len(decode(path).frames) == first.frames_written >= 5  # the first take is whole, trailer and all
    assert len(decode(tmp_path / "take-1.mp4").frames) == second.frames_written >= 5
    assert recorder.error_of("rec") is None


async def test_if_exists_overwrite_writes_over_an_earlier_file(tmp_path: Path) -> None:
    path = tmp_path / "live.mp4"
    path.write_bytes(b"an earlier file")
    params = {"path": path.name, "preset": "ultrafast", "if_exists": "overwrite"}
    session = sink_session({"rec": ("sink::file", params)})
    async with running_loop(session, tmp_path) as (loop, _recorder):
        await wait_frames_written(loop, "rec", 5)
        sink = loop.sink("rec")
        assert isinstance(sink, FileSink)
        assert sink.stats()["path_written"] == "live.mp4"
    assert len(decode(path).frames) == sink.frames_written >= 5
    assert not (tmp_path / "live-1.mp4").exists()


async def trio_join(sink: Sink) -> None:
    import trio

    await trio.to_thread.run_sync(sink.join, 10.0)


# ---------------------------------------------------------------------------- the README's example, end to end

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "example-io-pipeline.yaml"
LOGO = Path(__file__).resolve().parent.parent / "examples" / "assets" / "logo.png"
GREY_RGB = (130, 130, 130)  # the pushed I420 frame: Y = U = V = 128, limited range BT.709


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg command line tool as the Y4M pipe's reader")
async def test_example_io_pipeline_records_mp4_and_feeds_a_y4m_pipe(tmp_path: Path) -> None:
    """``compositord run --config examples/example-io-pipeline.yaml`` as the README runs it: a looping
    clip, the logo and a pushed frame go into the MP4 and the Y4M FIFO at once; SIGTERM finishes the MP4."""
    import numpy as np
    import yaml

    from compositord.client import open_client
    from compositord.testing.media import write_clip

    compositord = [sys.executable, "-m", "compositord"]  # the installed CLI of this interpreter's environment
    check = subprocess.run([*compositord, "check-config", str(EXAMPLE)], capture_output=True, text=True)
    assert (check.returncode, check.stdout.strip()) == (0, "ok"), check.stderr

    # The example as it is: its FIFO and its MP4 in the output directory, STATE/outputs.
    document = yaml.safe_load(EXAMPLE.read_text())
    config = EXAMPLE
    state = tmp_path / "state"
    (state / "assets").mkdir(parents=True)
    (state / "outputs").mkdir()
    fifo = state / "outputs" / document["nodes"]["raw"]["params"]["path"]
    os.mkfifo(fifo)
    shutil.copy(LOGO, state / "assets" / "logo.png")
    write_clip(state / "assets" / "clip.mp4", frames=10, fps=30, width=640, height=360, codec="ffv1")

    reader = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-nostats", "-f", "yuv4mpegpipe", "-i", str(fifo), "-f", "null", "-"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    daemon = subprocess.Popen(
        [*compositord, "run", "--config", str(config), "--state-dir", str(state), "--port", "0", "--log-level", "WARNING"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    daemon_log = daemon.stderr
    assert daemon_log is not None  # stderr=PIPE
    try:
        line = await trio.to_thread.run_sync(daemon_log.readline)  # run's own lines go to stderr
        while line and not line.startswith("compositord: serving "):  # after any warning logged before it
            line = await trio.to_thread.run_sync(daemon_log.readline)
        assert line.startswith("compositord: serving "), line + daemon_log.read()
        url = line.split("serving ", 1)[1].strip()
        camera = document["nodes"]["camera"]["params"]
        grey = np.full(camera["width"] * camera["height"] * 3 // 2, 128, np.uint8)
        async with open_client(url) as client:
            await client.push_frame("camera", camera["width"], camera["height"], camera["pixel_format"], grey)
            await trio.sleep(2.0)
        daemon.send_signal(signal.SIGTERM)
        assert await trio.to_thread.run_sync(lambda: daemon.wait(timeout=30)) == 0, daemon_log.read()
        _, reader_stderr = await trio.to_thread.run_sync(lambda: reader.communicate(timeout=30))
    finally:
        for process in (daemon, reader):
            if process.poll() is None:
                process.kill()
    reader_log = reader_stderr.decode(errors="replace")
    assert reader.returncode == 0 and "1280x720" in reader_log, reader_log
    piped = [int(n) for n in re.findall(r"frame=\s*(\d+)", reader_log)]
    assert piped and piped[-1] >= 5, reader_log

    assert not (tmp_path / "example-io.mp4").exists()  # not the working directory: the output directory
    decoded = decode(state / "outputs" / "example-io.mp4")
    assert (decoded.width, decoded.height, decoded.codec) == (1280, 720, "h264")
    assert len(decoded.frames) >= 5
    assert decoded.pts == sorted(decoded.pts) and len(set(decoded.pts)) == len(decoded.pts)
    rect = document["nodes"]["compositor"]["params"]["layers"]["in_2"]["rect"]
    last = decoded.frames[-1][rect["y"] : rect["y"] + rect["height"], rect["x"] : rect["x"] + rect["width"]]
    assert_colour(last, GREY_RGB, tolerance=10.0)  # the pushed frame, in its layer, in the recording
