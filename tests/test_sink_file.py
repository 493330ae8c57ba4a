"""sink::file: what the encoder wrote decodes with PyAV (frame count, size,
monotonic timestamps, the known colour within a tolerance); the file is
finished on stop and when its node is removed or retuned."""

from __future__ import annotations

from pathlib import Path

import av
import pytest

from compositord.daemon.sinks.encoding import ENCODERS
from tests.sink_helpers import H, W, assert_colour, decode, running_loop, sink_session, wait_frames_written, wait_until

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
    params = {"path": str(path), "codec": codec, "preset": "ultrafast", "bitrate_kbps": 1000}
    session = sink_session({"rec": ("sink::file", params)}, output_format=output_format)
    async with running_loop(session, tmp_path) as (loop, recorder):
        await wait_frames_written(loop, "rec", 12)
        sink = loop.sink("rec")
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
    session = sink_session({"rec": ("sink::file", {"path": str(path), "preset": "ultrafast"})})
    async with running_loop(session, tmp_path) as (loop, recorder):
        await wait_frames_written(loop, "rec", 5)
        sink = loop.sink("rec")
        without = session.copy()
        del without.nodes["rec"]
        without.connections = [c for c in without.connections if c.to_node != "rec"]
        loop.submit_topology(without)
        await wait_until(lambda: loop.sink("rec") is None)
        await trio_join(sink)
        decoded = decode(path)  # decodable while the pipeline still runs: the trailer is written
        assert len(decoded.frames) == sink.frames_written >= 5


async def trio_join(sink) -> None:
    import trio

    await trio.to_thread.run_sync(sink.join, 10.0)
