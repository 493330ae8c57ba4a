"""sink::y4m: a YUV4MPEG2 file decodes with PyAV; a FIFO is read by ffmpeg
(frame count and size) without the render loop ever waiting for the reader."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import trio

from compositord.daemon.engine.sinks.y4m import Y4MSink, y4m_header
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

# Raw 4:2:0 holds the renderer's limited-range YUV exactly; only YUV -> RGB rounding remains.
COLOUR_TOLERANCE = 3.0


def test_header() -> None:
    assert y4m_header(160, 90, 30, "bt709") == b"YUV4MPEG2 W160 H90 F30:1 Ip A1:1 C420jpeg XCOLORRANGE=LIMITED\n"


@pytest.mark.parametrize("output_format", ["nv12", "rgba8"])
async def test_y4m_file_decodes(tmp_path: Path, output_format: str) -> None:
    path = tmp_path / "out.y4m"
    session = sink_session({"raw": ("sink::y4m", {"path": path.name})}, output_format=output_format)
    async with running_loop(session, tmp_path) as (loop, recorder):
        await wait_frames_written(loop, "raw", 6)
        sink = loop.sink("raw")
        assert isinstance(sink, Y4MSink)
    frame_bytes = W * H * 3 // 2
    data = path.read_bytes()
    header_end = data.index(b"\n") + 1
    assert (len(data) - header_end) == sink.frames_written * (len(b"FRAME\n") + frame_bytes)
    decoded = decode(path)
    assert (decoded.width, decoded.height) == (W, H)
    assert len(decoded.frames) == sink.frames_written >= 6
    assert decoded.pts == sorted(decoded.pts)
    assert_colour(decoded.frames[-1], tolerance=COLOUR_TOLERANCE)
    assert recorder.error_of("raw") is None


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg command line tool")
async def test_fifo_into_ffmpeg(tmp_path: Path) -> None:
    fifo = tmp_path / "out.y4m"
    os.mkfifo(fifo)
    session = sink_session({"pipe": ("sink::y4m", {"path": fifo.name})}, fps=60)
    async with running_loop(session, tmp_path) as (loop, _recorder):
        # No reader yet: the loop renders on, the sink waits and drops (counted).
        rendered = loop.statistics().frames_rendered
        await wait_until(lambda: loop.statistics().frames_rendered >= rendered + 10)
        sink = loop.sink("pipe")
        assert isinstance(sink, Y4MSink)
        assert sink.frames_written == 0 and sink.frames_dropped > 0
        reader = subprocess.Popen(
            ["ffmpeg", "-hide_banner", "-nostats", "-f", "yuv4mpegpipe", "-i", str(fifo), "-f", "null", "-"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            await wait_frames_written(loop, "pipe", 20)
        except BaseException:
            reader.kill()
            raise
    # The loop stopped: the sink closed the FIFO, ffmpeg sees the end.
    _, stderr = await trio.to_thread.run_sync(lambda: reader.communicate(timeout=20))
    log = stderr.decode(errors="replace")
    assert reader.returncode == 0, log
    assert f"{W}x{H}" in log
    counts = [int(n) for n in re.findall(r"frame=\s*(\d+)", log)]
    assert counts and counts[-1] == sink.frames_written, log
