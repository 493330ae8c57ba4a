"""sink::window under Xvfb: the window thread (its own GLX context, never the
render thread's) shows the output; its framebuffer, read back on the window
thread, holds the known colour. Without a display the node says so."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import trio

from compositord.daemon.engine.sinks.window import WindowSink
from compositord.tests.sink_helpers import SOLID_RGB, running_loop, sink_session, wait_frames_written, wait_until

pytestmark = pytest.mark.gl

# The frame is uploaded as it was read back and drawn 1:1: llvmpipe's sampling of a flat colour is exact;
# NV12 output adds the YUV -> RGB conversion (libswscale): 3 levels.
COLOUR_TOLERANCE = 3.0


@pytest.fixture
def xvfb_display(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if shutil.which("Xvfb") is None:
        pytest.skip("no display can be had: Xvfb is not installed (scripts/dev installs it)")
    number = next(
        n for n in range(140, 400) if not Path(f"/tmp/.X11-unix/X{n}").exists() and not Path(f"/tmp/.X{n}-lock").exists()
    )
    server = subprocess.Popen(
        ["Xvfb", f":{number}", "-screen", "0", "640x360x24", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not Path(f"/tmp/.X11-unix/X{number}").exists():
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"no display can be had: Xvfb :{number} did not start (exit {server.poll()})")
            time.sleep(0.02)
        monkeypatch.setenv("DISPLAY", f":{number}")
        yield f":{number}"
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.parametrize("output_format", ["rgba8", "nv12"])
async def test_window_shows_the_output(tmp_path: Path, xvfb_display: str, output_format: str) -> None:
    session = sink_session({"screen": ("sink::window", {"title": "test"})}, output_format=output_format)
    async with running_loop(session, tmp_path) as (loop, recorder):
        await wait_frames_written(loop, "screen", 3)
        sink = loop.sink("screen")
        assert isinstance(sink, WindowSink)
        pixels = await trio.to_thread.run_sync(sink.capture, 10.0)
        assert recorder.error_of("screen") is None
    assert pixels is not None, "the window thread drew no frame after the capture request"
    assert pixels.shape == (90, 160, 3)
    deviation = np.abs(pixels.reshape(-1, 3).astype(float) - np.array(SOLID_RGB)).max()
    assert deviation <= COLOUR_TOLERANCE, f"window pixels differ from {SOLID_RGB} by up to {deviation}"


async def test_window_is_upright_and_scaled(tmp_path: Path, xvfb_display: str) -> None:
    """SMPTE bars (top and bottom rows differ) in a window twice the output size: the window shows
    the read-back frame the right way up, scaled."""
    session = sink_session({"screen": ("sink::window", {"width": 320, "height": 180})}, output_format="rgba8", pattern="smpte")
    async with running_loop(session, tmp_path) as (loop, _recorder):
        await wait_frames_written(loop, "screen", 3)
        sink = loop.sink("screen")
        assert isinstance(sink, WindowSink)
        pixels = await trio.to_thread.run_sync(sink.capture, 10.0)
        latest = loop.latest_output("comp")
        assert latest is not None, "frames were written, so one was rendered"
        output = latest.as_array()[:, :, :3].astype(float)
    assert pixels is not None and pixels.shape == (180, 320, 3)
    shown = pixels[1::2, 1::2].astype(float)  # the window's pixel centres that fall inside each output pixel
    inner = (slice(4, -4), slice(4, -4))  # bilinear filtering blends across bar edges; compare away from the border
    assert np.abs(output[0, 4:-4] - shown[0, 4:-4]).mean() <= 6.0, "top row"
    assert np.abs(output[-1, 4:-4] - shown[-1, 4:-4]).mean() <= 6.0, "bottom row"
    assert np.median(np.abs(output[inner] - shown[inner])) <= COLOUR_TOLERANCE


async def test_no_display_is_a_node_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    session = sink_session({"screen": ("sink::window", {})})
    async with running_loop(session, tmp_path) as (loop, recorder):
        await wait_until(lambda: recorder.error_of("screen") is not None)
        rendered = loop.statistics().frames_rendered
        await wait_until(lambda: loop.statistics().frames_rendered > rendered + 3)
    error = recorder.error_of("screen")
    assert error is not None and "no display" in error
    assert os.environ.get("DISPLAY") is None
