"""sink::stream: MPEG-TS over UDP to a PyAV receiver on 127.0.0.1 (frame count,
size, monotonic timestamps, colour); RTMP to a local ``ffmpeg -listen 1``
server; a TCP peer that hangs up mid-stream puts the node in its error state
while the rest renders on; SRT refused with a node error (the bundled FFmpeg
has no SRT)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest
import trio

from compositord.daemon.engine.sinks.stream import StreamOutput
from compositord.tests.sink_helpers import (
    Decoded,
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

# Same path as sink::file's H.264 (see test_sink_file.py).
COLOUR_TOLERANCE = 8.0


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def listening(port: int) -> bool:
    table = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return any(line.split()[1].endswith(f":{port:04X}") and line.split()[3] == "0A" for line in table)


async def test_mpegts_over_udp_reaches_a_receiver(tmp_path: Path) -> None:
    port = free_port()
    received: list[Decoded] = []
    # The receiver ends 1.5 s after the last datagram: a UDP reader's end is an I/O error once its timeout runs out.
    url = f"udp://127.0.0.1:{port}?timeout=1500000&overrun_nonfatal=1&fifo_size=100000"
    receiver = threading.Thread(target=lambda: received.append(decode(url, format="mpegts")), daemon=True)
    receiver.start()
    await trio.sleep(0.3)  # the receiver binds its port before the first datagram leaves
    params = {"url": f"udp://127.0.0.1:{port}?pkt_size=1316", "preset": "ultrafast", "bitrate_kbps": 1000}
    session = sink_session({"live": ("sink::stream", params)})
    async with running_loop(session, tmp_path) as (loop, recorder):
        await wait_frames_written(loop, "live", 15)
        sink = loop.sink("live")
        assert isinstance(sink, StreamOutput)  # the node in the engine; the encoder runs in its helper process
    await trio.to_thread.run_sync(receiver.join, 20.0)
    assert received, "the receiver got no stream"
    decoded = received[0]
    assert (decoded.width, decoded.height) == (W, H)
    assert decoded.codec == "h264"
    assert len(decoded.frames) == sink.frames_written >= 15
    assert decoded.pts == sorted(decoded.pts) and len(set(decoded.pts)) == len(decoded.pts)
    assert_colour(decoded.frames[-1], tolerance=COLOUR_TOLERANCE)
    assert recorder.error_of("live") is None


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg command line tool as the RTMP server")
async def test_rtmp_to_a_local_server(tmp_path: Path) -> None:
    port = free_port(socket.SOCK_STREAM)
    recorded = tmp_path / "received.flv"
    server = subprocess.Popen(
        [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-listen",
            "1",
            "-i",
            f"rtmp://127.0.0.1:{port}/live/test",
            "-c",
            "copy",
            str(recorded),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        with trio.fail_after(10):
            while not listening(port):  # looked up in /proc: a probe connection would use up the one-shot server
                await trio.sleep(0.05)
        params = {"url": f"rtmp://127.0.0.1:{port}/live/test", "format": "flv", "preset": "ultrafast", "bitrate_kbps": 1000}
        session = sink_session({"live": ("sink::stream", params)})
        async with running_loop(session, tmp_path) as (loop, _recorder):
            await wait_frames_written(loop, "live", 15)
            sink = loop.sink("live")
            assert isinstance(sink, StreamOutput)  # the node in the engine; the encoder runs in its helper process
        await trio.to_thread.run_sync(lambda: server.wait(timeout=20))
    finally:
        if server.poll() is None:
            server.kill()
    decoded = decode(recorded)
    assert (decoded.width, decoded.height) == (W, H)
    assert len(decoded.frames) == sink.frames_written >= 15
    assert decoded.pts == sorted(decoded.pts)
    assert_colour(decoded.frames[-1], tolerance=COLOUR_TOLERANCE)


async def test_srt_is_refused_with_a_node_error(tmp_path: Path) -> None:
    session = sink_session({"live": ("sink::stream", {"url": "srt://127.0.0.1:9000"})})
    async with running_loop(session, tmp_path) as (loop, recorder):
        await wait_until(lambda: recorder.error_of("live") is not None)
        rendered = loop.statistics().frames_rendered
        await wait_until(lambda: loop.statistics().frames_rendered > rendered + 5)  # the rest renders on
    error = recorder.error_of("live")
    assert error is not None
    assert "srt" in error
    assert "no srt protocol" in error


async def test_a_tcp_peer_that_goes_away_is_a_node_error_and_the_rest_renders_on(tmp_path: Path) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    received = bytearray()

    def peer() -> None:
        # Reads the start of the stream, then hangs up, as a receiver that crashes or is closed does.
        connection, _ = listener.accept()
        with connection:
            connection.settimeout(20)
            while len(received) < 20_000:
                chunk = connection.recv(65536)
                if not chunk:
                    return
                received.extend(chunk)
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # reset
        listener.close()

    receiver = threading.Thread(target=peer, daemon=True)
    receiver.start()
    params = {"url": f"tcp://127.0.0.1:{port}", "preset": "ultrafast", "bitrate_kbps": 4000}
    session = sink_session({"live": ("sink::stream", params)})
    async with running_loop(session, tmp_path) as (loop, recorder):
        await wait_until(lambda: recorder.error_of("live") is not None, timeout=30)
        rendered = loop.statistics().frames_rendered
        await wait_until(lambda: loop.statistics().frames_rendered > rendered + 5)  # the rest renders on
    await trio.to_thread.run_sync(receiver.join, 5.0)
    assert received[:1] == b"\x47", "the peer got an MPEG-TS stream before it went away"
    error = recorder.error_of("live")
    assert error is not None and f"tcp://127.0.0.1:{port}" in error
