"""Live inputs: video::capture (x11grab under Xvfb, V4L2 where a camera exists) and av::stream_in
(a local ffmpeg publishing MPEG-TS over UDP and RTMP to a listening node, dropping out and coming back)."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from compositord.daemon.engine.render.frames import SourceFrame
from compositord.daemon.engine.sources.capture import CaptureSource
from compositord.daemon.engine.sources.live_av import LiveAVSource
from compositord.daemon.engine.sources.stream_in import StreamInSource
from compositord.testing.media import i420_to_rgb, is_flash, write_clip_with_sound

FFMPEG = shutil.which("ffmpeg")
XVFB = shutil.which("Xvfb")
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="no ffmpeg command on the PATH to publish a stream")


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def poll_frames(source: LiveAVSource, seconds: float) -> list[SourceFrame]:
    """Drive the source like a 50 fps render loop for ``seconds``; the distinct frames shown."""
    shown: list[SourceFrame] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        frame = source.frame(time.monotonic())
        if frame is not None and (not shown or shown[-1].serial != frame.serial):
            shown.append(frame)
        time.sleep(0.02)
    return shown


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def closing(source: LiveAVSource) -> Iterator[LiveAVSource]:
    try:
        yield source
    finally:
        source.close(timeout=5.0)
        assert not source.receiver_alive


# ---------------------------------------------------------------- video::capture, x11


@pytest.fixture
def display() -> Iterator[str]:
    if XVFB is None:
        pytest.skip("no Xvfb command (scripts/dev installs the xvfb package)")
    for number in range(140, 180):
        if not os.path.exists(f"/tmp/.X11-unix/X{number}") and not os.path.exists(f"/tmp/.X{number}-lock"):
            break
    name = f":{number}"
    server = subprocess.Popen([XVFB, name, "-screen", "0", "640x480x24", "-nolisten", "tcp"], stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: os.path.exists(f"/tmp/.X11-unix/X{number}") or server.poll() is not None, 10, "Xvfb to start")
        if server.poll() is not None:
            pytest.skip(f"Xvfb {name} did not start (exit status {server.returncode})")
        yield name
    finally:
        server.terminate()
        server.wait(timeout=10)


DRAW_TWO_COLOURS = """
import tkinter
root = tkinter.Tk()
root.overrideredirect(True)
root.geometry("320x120+0+0")
canvas = tkinter.Canvas(root, width=320, height=120, highlightthickness=0, borderwidth=0)
canvas.pack()
canvas.create_rectangle(0, 0, 160, 120, fill="#ff0000", outline="")
canvas.create_rectangle(160, 0, 320, 120, fill="#0000ff", outline="")
root.after(300, lambda: print("drawn", flush=True))
root.mainloop()
"""


def bt709_limited(rgb: tuple[int, int, int]) -> tuple[float, float, float]:
    r, g, b = (c / 255 for c in rgb)
    y = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return 16 + 219 * y, 128 + 224 * (b - y) / 1.8556, 128 + 224 * (r - y) / 1.5748


def i420_at(frame: SourceFrame, x: int, y: int) -> tuple[int, int, int]:
    pixels = np.asarray(frame.data, dtype=np.uint8)
    w, h = frame.width, frame.height
    cw, ch = (w + 1) // 2, (h + 1) // 2
    luma = pixels[: w * h].reshape(h, w)
    u = pixels[w * h : w * h + cw * ch].reshape(ch, cw)
    v = pixels[w * h + cw * ch :].reshape(ch, cw)
    return int(luma[y, x]), int(u[y // 2, x // 2]), int(v[y // 2, x // 2])


def test_x11_capture_shows_the_region_of_the_display_it_names(display: str) -> None:
    try:
        import tkinter  # noqa: F401  # only to know whether the drawing window can be made
    except ImportError:
        pytest.skip("no tkinter in this Python to draw known content on the display")
    painter = subprocess.Popen(
        [sys.executable, "-c", DRAW_TWO_COLOURS], env={**os.environ, "DISPLAY": display}, stdout=subprocess.PIPE, text=True
    )
    try:
        assert painter.stdout is not None and painter.stdout.readline().strip() == "drawn"
        params = {
            "source": "x11",
            "display": display,
            "x": 40,
            "y": 20,
            "width": 200,
            "height": 80,
            "frame_rate": 15,
            "draw_mouse": False,
        }
        with closing(CaptureSource(params)) as source:
            assert source.condition == "connecting"
            wait_for(lambda: source.condition == "live", 10, "the capture to go live")
            shown = poll_frames(source, 1.0)
            assert len(shown) >= 5  # about 15 a second
            frame = shown[-1]
            assert (frame.width, frame.height) == (200, 80)
            # Display x 40..200 is red (region 0..120), 200..360 blue (region 120..200), below y 120 black.
            for (x, y), colour in (((60, 40), (255, 0, 0)), ((160, 40), (0, 0, 255)), ((60, 79), (255, 0, 0))):
                got = i420_at(frame, x, y)
                assert got == pytest.approx(bt709_limited(colour), abs=6), (x, y, got)
            assert source.error is None
            stats = source.stats()
            assert stats["state"] == "live" and stats["frames_decoded"] >= len(shown)
    finally:
        painter.terminate()
        painter.wait(timeout=10)


def test_x11_capture_of_a_display_that_is_not_there_is_a_node_error() -> None:
    with closing(CaptureSource({"source": "x11", "display": ":4242", "width": 64, "height": 48})) as source:
        wait_for(lambda: source.error is not None, 10, "the node's error")
        assert ":4242" in source.error  # type: ignore[operator]
        assert source.condition == "connecting" and source.frame(1.0) is None


# ---------------------------------------------------------------- video::capture, v4l2


def test_v4l2_device_that_does_not_exist_is_a_node_error_and_the_receiver_keeps_trying() -> None:
    with closing(CaptureSource({"source": "v4l2", "device": "/dev/video97", "width": 640, "height": 480})) as source:
        wait_for(lambda: source.error is not None, 10, "the node's error")
        assert source.error is not None and "/dev/video97" in source.error and "No such file" in source.error
        assert source.condition == "connecting"
        assert source.receiver_alive  # tries again with backoff; the node is not gone
        assert source.frame(1.0) is None


CAMERAS = sorted(glob.glob("/dev/video*"))


@pytest.mark.skipif(not CAMERAS, reason="no V4L2 device: /dev/video* does not exist on this machine")
def test_v4l2_camera_goes_live() -> None:
    with closing(
        CaptureSource({"source": "v4l2", "device": CAMERAS[0], "width": 640, "height": 480, "frame_rate": 30})
    ) as source:
        wait_for(lambda: source.condition == "live" or source.error is not None, 15, "the camera")
        assert source.error is None, source.error
        assert poll_frames(source, 1.0)


# ---------------------------------------------------------------- av::stream_in


def publish(url: str, fmt: str, codec: str, seconds: float) -> subprocess.Popen[bytes]:
    assert FFMPEG is not None
    command = [
        FFMPEG,
        "-nostdin",
        "-loglevel",
        "error",
        "-re",
        "-f",
        "lavfi",
        "-i",
        f"testsrc=size=160x120:rate=25:duration={seconds}",
    ]
    command += ["-c:v", codec, "-g", "10", "-f", fmt, url]
    return subprocess.Popen(command, stdin=subprocess.DEVNULL)


def start_until_live(source: LiveAVSource, start_publisher: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    """Start a publisher; start it again if it gave up before the node went live (it connected
    in the moment a listening node was between two waits, as a real publisher would retry)."""
    deadline = time.monotonic() + 30
    publisher = start_publisher()
    while source.condition != "live":
        if time.monotonic() > deadline:
            publisher.kill()
            raise AssertionError(f"the publisher never went live: {source.stats()}, error {source.error}")
        if publisher.poll() is not None:
            publisher = start_publisher()
        time.sleep(0.02)
    return publisher


def go_live_drop_out_and_come_back(source: LiveAVSource, start_publisher: Callable[[], subprocess.Popen[bytes]]) -> None:
    states: list[str] = []
    recorder_stop = threading.Event()

    def record() -> None:
        while not recorder_stop.is_set():
            if not states or states[-1] != source.condition:
                states.append(source.condition)
            time.sleep(0.01)

    recorder = threading.Thread(target=record, daemon=True)
    recorder.start()
    try:
        first = start_until_live(source, start_publisher)
        before = poll_frames(source, 0.8)
        assert len(before) >= 4, source.stats()  # frames flow (about 20 at 25 fps; a loaded 2-core machine shows fewer)
        first.wait(timeout=30)  # the publisher's clip ends: the peer is gone
        wait_for(lambda: source.condition == "connecting", 15, "the node to notice the peer went away")
        second = start_until_live(source, start_publisher)
        after = [frame for frame in poll_frames(source, 0.8) if frame.serial > before[-1].serial]
        assert len(after) >= 4, source.stats()  # frames flow again
        second.kill()
        second.wait(timeout=10)
    finally:
        recorder_stop.set()
        recorder.join(5)
    assert states[:4] == ["connecting", "live", "connecting", "live"]
    assert source.connects == 2
    assert source.error is None


@needs_ffmpeg
def test_udp_mpegts_ingest_goes_live_then_connecting_when_the_sender_stops_then_live_again() -> None:
    port = free_port(socket.SOCK_DGRAM)
    params = {"url": f"udp://127.0.0.1:{port}", "open_timeout_s": 3.0, "read_timeout_s": 1.0, "latency_ms": 40}
    with closing(StreamInSource(params)) as source:
        go_live_drop_out_and_come_back(
            source, lambda: publish(f"udp://127.0.0.1:{port}?pkt_size=1316", "mpegts", "mpeg2video", seconds=3.0)
        )


@needs_ffmpeg
def test_rtmp_listening_node_takes_a_publisher_loses_it_and_takes_the_next() -> None:
    port = free_port(socket.SOCK_STREAM)
    url = f"rtmp://127.0.0.1:{port}/live/key"
    params = {"url": url, "listen": True, "open_timeout_s": 2.0, "read_timeout_s": 1.0, "latency_ms": 40}
    with closing(StreamInSource(params)) as source:
        go_live_drop_out_and_come_back(source, lambda: publish(url, "flv", "flv1", seconds=3.0))


def test_waiting_for_a_publisher_does_not_hold_other_threads() -> None:
    """The receiver waits inside FFmpeg for a publisher; the render thread must keep its rate meanwhile."""
    port = free_port(socket.SOCK_STREAM)
    params = {"url": f"rtmp://127.0.0.1:{port}/live/key", "listen": True, "open_timeout_s": 1.0}
    with closing(StreamInSource(params)) as source:
        time.sleep(0.1)
        gaps = []
        last = time.monotonic()
        end = last + 2.5  # spans at least one whole open that times out and the next
        while time.monotonic() < end:
            time.sleep(0.005)
            source.frame(time.monotonic())
            now = time.monotonic()
            gaps.append(now - last)
            last = now
        assert max(gaps) < 0.25, f"a thread was held for {max(gaps) * 1000:.0f} ms"
        assert source.condition == "connecting" and source.error is None  # nobody published: not an error


def test_a_refused_pull_is_an_error_retried_with_backoff() -> None:
    port = free_port(socket.SOCK_STREAM)  # nothing listens there
    with closing(StreamInSource({"url": f"rtmp://127.0.0.1:{port}/live/key", "open_timeout_s": 2.0})) as source:
        wait_for(lambda: source.error is not None, 10, "the node's error")
        assert f"127.0.0.1:{port}" in source.error  # type: ignore[operator]
        assert source.condition == "connecting" and source.receiver_alive


def test_srt_is_refused_when_the_node_is_made() -> None:
    with pytest.raises(ValueError, match="no SRT protocol"):
        StreamInSource({"url": "srt://127.0.0.1:9000"})


# ---------------------------------------------------------------- av::stream_in, sound


def publish_with_sound(url: str, tone_hz: float, seconds: float) -> subprocess.Popen[bytes]:
    """MPEG-TS over UDP: pictures and a sine of ``tone_hz`` (MP2, in every FFmpeg build)."""
    assert FFMPEG is not None
    command = [FFMPEG, "-nostdin", "-loglevel", "error", "-re"]
    command += ["-f", "lavfi", "-i", f"testsrc=size=160x120:rate=25:duration={seconds}"]
    command += ["-f", "lavfi", "-i", f"sine=frequency={tone_hz}:sample_rate=44100:duration={seconds}"]
    command += ["-c:v", "mpeg2video", "-g", "10", "-c:a", "mp2", "-b:a", "128k", "-f", "mpegts", url]
    return subprocess.Popen(command, stdin=subprocess.DEVNULL)


def listen(source: StreamInSource, seconds: float, until: Callable[[], bool] = lambda: False) -> tuple[np.ndarray, float]:
    """Read the node's sound like the mixer does (one 50 fps frame's worth at a time, at ``audio_time``) for
    ``seconds`` or until ``until()``: the sound, and the longest a read took."""
    buffer = source.audio
    assert buffer is not None
    blocks = [np.zeros((0, 2), dtype=np.float32)]
    slowest = 0.0
    started = time.monotonic()
    index = 0
    while (now := time.monotonic()) - started < seconds and not until():
        t = index / 50
        if started + t > now:
            time.sleep(started + t - now)
        began = time.perf_counter()
        blocks.append(buffer.read(960, at=source.audio_time(started + t)))
        slowest = max(slowest, time.perf_counter() - began)
        index += 1
    return np.concatenate(blocks), slowest


def dominant_frequency(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.shape[0])))
    return float(np.fft.rfftfreq(samples.shape[0], 1 / 48_000)[int(np.argmax(spectrum))])


def loud(samples: np.ndarray) -> np.ndarray:
    """The samples of 10 ms stretches that are not silence."""
    steps = samples[: samples.shape[0] // 480 * 480, 0].reshape(-1, 480)
    return steps[np.abs(steps).max(axis=1) > 0.01].reshape(-1)


@needs_ffmpeg
def test_udp_ingest_carries_its_sound_and_recovers_it_after_the_sender_comes_back() -> None:
    port = free_port(socket.SOCK_DGRAM)
    params = {"url": f"udp://127.0.0.1:{port}", "open_timeout_s": 3.0, "read_timeout_s": 1.0, "latency_ms": 100}
    url = f"udp://127.0.0.1:{port}?pkt_size=1316"
    with closing(StreamInSource(params)) as source:
        assert isinstance(source, StreamInSource) and source.audio is not None  # silence until sound arrives
        first = start_until_live(source, lambda: publish_with_sound(url, 1000.0, seconds=3.0))
        sound, _ = listen(source, 1.5)
        heard = loud(sound)
        assert heard.shape[0] > 48_000 // 2, source.stats()  # most of the time after the first packets
        assert dominant_frequency(heard) == pytest.approx(1000.0, abs=10.0)
        assert source.stats()["audio"]["written_samples"] > 48_000

        # The sender's clip ends; the mixer reads on meanwhile (the sound already received plays out).
        listen(source, 15, until=lambda: source.condition == "connecting")
        assert source.condition == "connecting", "the node noticed the sender went away"
        listen(source, 0.5)  # the last sound received, up to latency_ms + the jitter room
        underruns = source.stats()["audio"]["underrun_samples"]
        quiet, slowest = listen(source, 0.5)
        assert not np.any(quiet), "the sound of a sender gone is silence"
        assert source.stats()["audio"]["underrun_samples"] >= underruns + 0.4 * 48_000
        assert slowest < 0.05

        first.wait(timeout=10)
        second = start_until_live(source, lambda: publish_with_sound(url, 500.0, seconds=30.0))
        try:
            sound, _ = listen(source, 1.5)
            heard = loud(sound)
            assert heard.shape[0] > 48_000 // 2, source.stats()
            assert dominant_frequency(heard) == pytest.approx(500.0, abs=10.0)  # the new sender's, none of the old
        finally:
            second.kill()
            second.wait(timeout=10)


@needs_ffmpeg
def test_a_stalled_sender_is_silence_and_never_holds_the_reader() -> None:
    port = free_port(socket.SOCK_DGRAM)
    params = {"url": f"udp://127.0.0.1:{port}", "open_timeout_s": 3.0, "read_timeout_s": 2.5, "latency_ms": 100}
    url = f"udp://127.0.0.1:{port}?pkt_size=1316"
    with closing(StreamInSource(params)) as source:
        assert isinstance(source, StreamInSource)
        sender = start_until_live(source, lambda: publish_with_sound(url, 1000.0, seconds=30.0))
        try:
            listen(source, 1.0)
            sender.send_signal(signal.SIGSTOP)  # the sender stalls: no packets, the stream stays open
            listen(source, 0.5)  # what was buffered plays out
            underruns = source.stats()["audio"]["underrun_samples"]
            quiet, slowest = listen(source, 1.0)
            assert source.condition == "live"  # read_timeout_s has not passed: still the same connection
            assert not np.any(quiet)
            assert source.stats()["audio"]["underrun_samples"] >= underruns + 0.8 * 48_000
            assert slowest < 0.05, f"a read took {slowest * 1000:.0f} ms"
            sender.send_signal(signal.SIGCONT)
            sound, _ = listen(source, 1.5)
            assert loud(sound).shape[0] > 48_000 // 3, source.stats()  # the sound comes back
        finally:
            sender.kill()
            sender.wait(timeout=10)


def test_audio_false_leaves_the_sound_out() -> None:
    port = free_port(socket.SOCK_DGRAM)
    with closing(StreamInSource({"url": f"udp://127.0.0.1:{port}", "audio": False, "open_timeout_s": 1.0})) as source:
        assert source.audio is None and "audio" not in source.stats()


def test_capture_has_no_sound() -> None:
    with closing(CaptureSource({"source": "x11", "display": ":4242", "width": 64, "height": 48})) as source:
        assert source.audio is None and "audio" not in source.stats()


@needs_ffmpeg
def test_udp_ingest_plays_each_burst_with_its_flash_within_one_frame(tmp_path: Path) -> None:
    if (
        subprocess.run([FFMPEG or "ffmpeg", "-hide_banner", "-encoders"], capture_output=True, text=True).stdout.find(" libx264 ")
        < 0
    ):
        pytest.skip("this ffmpeg has no libx264 encoder")
    # H.264 and AAC in MPEG-TS: the muxer packs ~100-200 ms of sound into a packet, so it arrives later
    # than the pictures it goes with; played by timestamps on the pictures' clock, which waits for it,
    # each burst still comes with its flash (in arrival order it was ~150 ms off).
    clip = write_clip_with_sound(
        tmp_path / "flash.mkv", frames=30, fps=25, flash_every=10, burst_ms=60.0, sample_rate=48_000, layout="stereo"
    )
    port = free_port(socket.SOCK_DGRAM)
    params = {"url": f"udp://127.0.0.1:{port}", "open_timeout_s": 3.0, "read_timeout_s": 2.0, "latency_ms": 100}
    assert FFMPEG is not None
    command = [FFMPEG, "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(clip)]
    command += ["-c:v", "libx264", "-preset", "veryfast", "-c:a", "aac", "-f", "mpegts", f"udp://127.0.0.1:{port}?pkt_size=1316"]
    with closing(StreamInSource(params)) as source:
        assert isinstance(source, StreamInSource) and source.audio is not None
        sender = start_until_live(source, lambda: subprocess.Popen(command, stdin=subprocess.DEVNULL))
        try:
            flashes, blocks, was_flash = [], [], False
            started = time.monotonic()
            for index in range(300):  # 6 s at 50 fps
                t = index / 50
                if started + t > time.monotonic():
                    time.sleep(started + t - time.monotonic())
                frame = source.frame(started + t)
                flash = frame is not None and is_flash(
                    i420_to_rgb(np.asarray(frame.data), frame.width, frame.height, frame.color_matrix)
                )
                if flash and not was_flash:
                    flashes.append(t)
                was_flash = flash
                blocks.append(source.audio.read(960, at=source.audio_time(started + t)))
        finally:
            sender.kill()
            sender.wait(timeout=10)
    envelope = np.abs(np.concatenate(blocks)[:, 0]).reshape(-1, 48).max(axis=1) > 0.1  # 1 ms steps
    bursts, quiet = [], 100
    for step, on in enumerate(envelope):
        if on and quiet >= 100:
            bursts.append(step / 1000)
        quiet = 0 if on else quiet + 1
    # The first second settles: sound before the first picture is dropped, and the first late sound holds
    # the pictures back (a jump of their clock).
    settled = [b for b in bursts if 1.5 < b < 5.9]  # (a burst in the last frames may have its flash after them)
    assert len(settled) >= 8 and len(flashes) >= 12, (flashes, bursts)
    offsets = [b - min(flashes, key=lambda f: abs(f - b)) for b in settled]
    assert max(abs(o) for o in offsets) <= 1 / 25, f"burst - flash (s): {offsets}"
