"""Sinks with sound: what ``sink::file`` and ``sink::stream`` wrote decodes with PyAV with an audio
stream of the right codec, rate and channels, as long as the video within a frame, holding the tone
that was fed; **sync**: a white flash every second and a tone burst on the same slots, each burst's
onset found within one video frame (and within 5 ms, less than any encoder's priming, so priming
mishandled would fail) of its flash, on the container's clock; frames lost to a full sink queue cost
their sound but not the sync; ``sink::y4m`` offered frames with sound still writes valid YUV4MPEG2
and says the sound is not recorded.

The sinks are fed ``SinkFrame``s made here (``tests/av_sync.py``), as the compositor's mixer hands
them: no render loop, no GL. ``COMPOSITORD_SYNC_SECONDS`` sets the media length of the long sync
run (docs/RELIABILITY.md: 600 for the 10-minute figure).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from compositord.daemon.engine.audio.bus import AudioBlock
from compositord.daemon.engine.frame_slots import FrameSlot
from compositord.daemon.engine.sinks.base import ErrorLatch, Sink, SinkFrame
from compositord.daemon.engine.sinks.file import FileSink
from compositord.daemon.engine.sinks.helper import AUDIO_ALLOWANCE, MAX_AUDIO_PER_FRAME_S, audio_from_slot, audio_in_slot
from compositord.daemon.engine.sinks.stream import StreamOutput
from compositord.daemon.engine.sinks.y4m import AUDIO_NOT_RECORDED, Y4MSink
from compositord.protocol import params as schema
from compositord.protocol.errors import RemoteProtocolError
from compositord.tests.av_sync import Measured, SyncPattern, measure

SYNC_LIMIT_S = 0.005  # well under AAC's 1024-sample (21 ms) and Opus's 312-sample (6.5 ms) priming
LONG_SYNC_SECONDS = float(os.environ.get("COMPOSITORD_SYNC_SECONDS", "20"))


class Errors:
    def __init__(self) -> None:
        self.messages: list[str | None] = []

    def latch(self, node_id: str) -> ErrorLatch:
        return ErrorLatch(node_id, lambda _node, message: self.messages.append(message))

    @property
    def last(self) -> str | None:
        return self.messages[-1] if self.messages else None


def file_sink(tmp_path: Path, errors: Errors, **given: Any) -> FileSink:
    params = schema.with_defaults("sink::file", schema.validate("sink::file", {"preset": "ultrafast", **given}))
    return FileSink("rec", params, errors.latch("rec"), output_dir=tmp_path)


def feed(sink: Sink, frames: Iterable[SinkFrame], timeout: float = 120.0) -> None:
    """Offer every frame, waiting for room in the queue (an encoder that keeps up drops none)."""
    deadline = time.monotonic() + timeout
    for item in frames:
        while sink.stats()["queue_depth"] >= sink.queue_capacity:
            assert time.monotonic() < deadline, "the sink stopped taking frames"
            time.sleep(0.001)
        assert sink.offer(item)


def record(sink: Sink, frames: Iterable[SinkFrame]) -> None:
    sink.start()
    try:
        feed(sink, frames)
    finally:
        assert sink.close(wait=True, timeout=60.0), "the sink did not finish"


def assert_in_sync(measured: Measured, pattern: SyncPattern, frames: int) -> list[float]:
    expected = pattern.flash_times(frames)
    assert measured.video_onsets == pytest.approx([measured.video_times[0] + t for t in expected], abs=0.002), (
        "every flash decoded where it was"
    )
    assert len(measured.audio_onsets) == len(expected), (measured.audio_onsets, expected)
    offsets = measured.offsets()
    frame = 1 / pattern.fps
    assert all(abs(offset) < frame for offset in offsets), offsets
    assert all(abs(offset) < SYNC_LIMIT_S for offset in offsets), offsets
    return offsets


# ------------------------------------------------------------------ params


@pytest.mark.parametrize(
    ("given", "pointer", "words"),
    [
        ({"path": "a.mp4", "audio_codec": "opus"}, "/audio_codec", "most MP4 players cannot play Opus"),
        ({"path": "a.webm", "codec": "vp9", "audio_codec": "aac"}, "/audio_codec", "WebM holds only Vorbis and Opus"),
        ({"path": "a.mkv", "audio_codec": "flac"}, "/audio_codec", "must be one of auto, aac, opus, none"),
        ({"path": "a.mp4", "audio_bitrate_kbps": 4}, "/audio_bitrate_kbps", "16"),
    ],
)
def test_file_audio_params_are_refused_with_the_reason(given: dict[str, Any], pointer: str, words: str) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        schema.validate("sink::file", given)
    text = str(caught.value)
    assert pointer in text and words in text, text


def test_file_audio_params_accept_what_the_containers_hold() -> None:
    for given in (
        {"path": "a.mp4", "audio_codec": "aac"},
        {"path": "a.mkv", "audio_codec": "opus"},
        {"path": "a.mkv", "audio_codec": "aac"},
        {"path": "a.webm", "codec": "vp9", "audio_codec": "opus"},
        {"path": "a.webm", "codec": "vp9", "audio_codec": "none"},
    ):
        assert schema.validate("sink::file", given)["audio_codec"] == given["audio_codec"]
    assert schema.with_defaults("sink::file", schema.validate("sink::file", {"path": "a.mp4"}))["audio_codec"] == "auto"


def test_stream_audio_is_aac_or_none() -> None:
    with pytest.raises(RemoteProtocolError, match="/audio_codec"):
        schema.validate("sink::stream", {"url": "udp://127.0.0.1:5000", "audio_codec": "opus"})
    assert schema.validate("sink::stream", {"url": "udp://127.0.0.1:5000", "audio_codec": "none"})["audio_codec"] == "none"


# ------------------------------------------------------------------ sink::file


@pytest.mark.parametrize(
    ("name", "codec", "audio_codec", "expected"),
    [
        ("out.mp4", "h264", "auto", "aac"),
        ("aac.mkv", "h264", "aac", "aac"),
        ("opus.mkv", "h264", "opus", "opus"),
        ("out.webm", "vp9", "auto", "opus"),
    ],
)
def test_file_records_sound_in_sync(tmp_path: Path, name: str, codec: str, audio_codec: str, expected: str) -> None:
    errors = Errors()
    sink = file_sink(tmp_path, errors, path=name, codec=codec, audio_codec=audio_codec)
    pattern = SyncPattern(start_frame=7)  # the sink's first frame is not the loop's: its media_time is the origin
    count = 100
    record(sink, pattern.frames(count))
    assert errors.last is None
    stats = sink.stats()
    assert stats["frames_written"] == count
    assert stats["audio"]["codec"] == expected and stats["audio"]["silence_filled_seconds"] == 0.0
    measured = measure(tmp_path / name)
    assert measured.audio_codec in ({"aac": ("aac",), "opus": ("opus", "libopus")}[expected])
    assert (measured.sample_rate, measured.channels) == (48_000, 2)
    assert abs(measured.audio_duration - measured.video_duration(1 / pattern.fps)) < 1 / pattern.fps
    assert measured.dominant_frequency(measured.audio_onsets[0] + 0.01, 0.08) == pytest.approx(pattern.tone_hz, abs=15)
    assert_in_sync(measured, pattern, count)


def test_mono_44k1_sound_keeps_its_rate_and_layout(tmp_path: Path) -> None:
    errors = Errors()
    sink = file_sink(tmp_path, errors, path="mono.mp4")
    pattern = SyncPattern(sample_rate=44_100, channels=1, tone_hz=440.0)
    record(sink, pattern.frames(70))
    measured = measure(tmp_path / "mono.mp4")
    assert (measured.audio_codec, measured.sample_rate, measured.channels) == ("aac", 44_100, 1)
    assert measured.dominant_frequency(measured.audio_onsets[0] + 0.01, 0.08) == pytest.approx(440.0, abs=15)
    assert_in_sync(measured, pattern, 70)


def test_a_first_frame_without_sound_makes_a_video_only_file(tmp_path: Path) -> None:
    errors = Errors()
    sink = file_sink(tmp_path, errors, path="silent.mp4")
    pattern = SyncPattern()
    first = pattern.frame(0)
    frames = [SinkFrame(first.frame, first.media_time, first.fps, None)] + [pattern.frame(i) for i in range(1, 40)]
    record(sink, frames)
    assert errors.last is None
    assert sink.stats()["audio"] is None and sink.stats()["audio_blocks_ignored"] == 39
    with av.open(str(tmp_path / "silent.mp4")) as container:
        assert not container.streams.audio and len(container.streams.video) == 1


def test_audio_codec_none_makes_a_video_only_file(tmp_path: Path) -> None:
    errors = Errors()
    sink = file_sink(tmp_path, errors, path="none.mkv", audio_codec="none")
    record(sink, SyncPattern().frames(20))
    with av.open(str(tmp_path / "none.mkv")) as container:
        assert not container.streams.audio


def test_frames_dropped_by_a_full_queue_cost_their_sound_but_not_the_sync(tmp_path: Path) -> None:
    errors = Errors()
    sink = file_sink(tmp_path, errors, path="drops.mp4")
    sink.queue_capacity = 1
    pattern = SyncPattern(flash_frames=3)
    count = 150
    sink.start()
    offered = []
    for index in range(count):
        if index % 10 == 0:  # let the queue drain now and then, so some of every stretch gets through
            while sink.stats()["queue_depth"]:
                time.sleep(0.001)
        offered.append(sink.offer(pattern.frame(index)))
    assert sink.close(wait=True, timeout=60.0)
    stats = sink.stats()
    assert stats["frames_dropped"] > 0 and not all(offered), "the test needs the queue to drop frames"
    assert stats["frames_written"] == sum(offered)
    assert stats["audio"]["silence_filled_seconds"] > 0, "the sound of dropped frames was replaced by silence"
    measured = measure(tmp_path / "drops.mp4")
    kept = [i for i, taken in enumerate(offered) if taken]
    origin = pattern.frame_time(kept[0])
    # Each flash shows from its first written frame, and its burst must start there too (its earlier sound
    # went with the dropped frames): both within a frame, and within 5 ms. A flash frame dropped between two
    # written ones starts nothing: the picture stays white across its slot, and its 33 ms of silence are far
    # shorter than the 0.2 s a burst onset needs before it.
    first_written_flashes = [
        pattern.frame_time(i) - origin
        for previous, i in zip([None, *kept], kept, strict=False)
        if pattern.is_flash(i) and (previous is None or not pattern.is_flash(previous))
    ]
    assert measured.video_onsets == pytest.approx([measured.video_times[0] + t for t in first_written_flashes], abs=0.002)
    offsets = measured.offsets()
    assert len(offsets) == len(first_written_flashes) > 0
    assert all(abs(offset) < SYNC_LIMIT_S for offset in offsets), offsets
    assert abs(measured.audio_duration - measured.video_duration(1 / pattern.fps)) < 1 / pattern.fps


def test_sound_that_changes_format_is_a_node_error(tmp_path: Path) -> None:
    errors = Errors()
    sink = file_sink(tmp_path, errors, path="changed.mkv")
    pattern = SyncPattern()
    later = pattern.frame(5)
    changed = SinkFrame(later.frame, later.media_time, later.fps, AudioBlock(np.zeros((1470, 2), np.float32), 0, 44_100))
    sink.start()
    feed(sink, [*pattern.frames(5), changed])
    sink.close(wait=True, timeout=30.0)
    assert errors.last is not None and "48000 Hz stereo to 44100 Hz stereo" in errors.last, errors.messages
    with av.open(str(tmp_path / "changed.mkv")) as container:  # what came before is finished and plays
        assert len(list(container.decode(video=0))) == 5


@pytest.mark.slow
def test_long_recording_stays_in_sync(tmp_path: Path) -> None:
    """The CI length of docs/RELIABILITY.md's sync measurement (``COMPOSITORD_SYNC_SECONDS`` for the long one)."""
    errors = Errors()
    sink = file_sink(tmp_path, errors, path="long.mp4")
    pattern = SyncPattern(width=320, height=180)
    count = round(LONG_SYNC_SECONDS * pattern.fps)
    started = time.monotonic()
    record(sink, pattern.frames(count))
    took = time.monotonic() - started
    measured = measure(tmp_path / "long.mp4")
    offsets = assert_in_sync(measured, pattern, count)
    worst = max(abs(offset) for offset in offsets)
    print(
        f"sync over {count / pattern.fps:g} s of media ({took:.1f} s to record): {len(offsets)} flashes, worst {worst * 1000:.2f} ms"
    )
    assert abs(measured.audio_duration - measured.video_duration(1 / pattern.fps)) < 1 / pattern.fps


# ------------------------------------------------------------------ sink::stream


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def listening(port: int) -> bool:
    table = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return any(line.split()[1].endswith(f":{port:04X}") and line.split()[3] == "0A" for line in table)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg command line tool as the receiving server")
@pytest.mark.parametrize(("scheme", "format_name", "suffix"), [("tcp", "mpegts", "ts"), ("rtmp", "flv", "flv")])
def test_stream_carries_aac_in_sync(tmp_path: Path, scheme: str, format_name: str, suffix: str) -> None:
    """MPEG-TS over TCP and FLV over RTMP to a local ``ffmpeg`` that listens and copies what it gets to a file
    (a listen open in this process would hold PyAV's GIL: see docs/KNOWN-TO-WORK)."""
    port = free_port()
    url = f"tcp://127.0.0.1:{port}" if scheme == "tcp" else f"rtmp://127.0.0.1:{port}/live/test"
    received = tmp_path / f"received.{suffix}"
    listen = ["-listen", "1", "-i", f"{url}?listen=1" if scheme == "tcp" else url]
    server = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", *listen, "-c", "copy", "-f", format_name, str(received)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while not listening(port):
            assert time.monotonic() < deadline, "the ffmpeg server did not listen"
            time.sleep(0.05)
        params = schema.with_defaults(
            "sink::stream",
            schema.validate("sink::stream", {"url": url, "format": format_name, "preset": "ultrafast", "bitrate_kbps": 1000}),
        )
        errors = Errors()
        sink = StreamOutput("live", params, errors.latch("live"))
        pattern = SyncPattern()
        count = 130
        sink.start()
        # The helper drops what comes while it connects: wait for its first written frame, then pace
        # the rest so that none is dropped (the sync check below needs every flash).
        feed(sink, [pattern.frame(0)])
        deadline = time.monotonic() + 15
        while sink.stats()["frames_written"] < 1:
            assert time.monotonic() < deadline, f"the stream never connected: {errors.messages}"
            time.sleep(0.01)
        for index in range(1, count):
            feed(sink, [pattern.frame(index)])
            time.sleep(0.004)
        assert sink.close(wait=True, timeout=30.0)
        stats = sink.stats()
        server.wait(timeout=20)
    finally:
        if server.poll() is None:
            server.kill()
    assert errors.last is None, errors.messages
    assert stats["audio"]["codec"] == "aac" and stats["audio"]["sample_rate"] == 48_000
    measured = measure(received)
    assert (measured.video_codec, measured.audio_codec) == ("h264", "aac")
    assert (measured.sample_rate, measured.channels) == (48_000, 2)
    assert stats["frames_written"] == len(measured.video_times)
    assert len(measured.video_onsets) == len(pattern.flash_times(stats["frames_written"])) >= 4
    offsets = measured.offsets()
    assert all(abs(offset) < 1 / pattern.fps for offset in offsets), offsets
    assert all(abs(offset) < SYNC_LIMIT_S for offset in offsets), offsets
    assert measured.dominant_frequency(measured.audio_onsets[0] + 0.01, 0.08) == pytest.approx(pattern.tone_hz, abs=15)


# ------------------------------------------------------------------ sink::y4m


def test_y4m_with_sound_offered_writes_valid_y4m_and_says_the_sound_is_not_recorded(tmp_path: Path) -> None:
    errors = Errors()
    params = schema.with_defaults("sink::y4m", schema.validate("sink::y4m", {"path": "raw.y4m"}))
    sink = Y4MSink("raw", params, errors.latch("raw"), output_dir=tmp_path)
    pattern = SyncPattern()
    record(sink, pattern.frames(12))
    assert errors.last is None
    stats = sink.stats()
    assert stats["audio"] == AUDIO_NOT_RECORDED and stats["audio_blocks_ignored"] == 12
    data = (tmp_path / "raw.y4m").read_bytes()
    assert data.startswith(b"YUV4MPEG2 W160 H96 F30:1 ")
    assert data.count(b"FRAME\n") == 12
    with av.open(str(tmp_path / "raw.y4m")) as container:
        assert not container.streams.audio
        frames = list(container.decode(video=0))
    assert len(frames) == 12
    assert frames[0].to_ndarray(format="gray").mean() > 200  # frame 0 is a flash


# ------------------------------------------------------------------ the measurement itself


ENCODE_REFERENCE = ("-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac")


def ffmpeg_flashes(path: Path, seconds: int, audio_delay_ms: float = 0.0) -> None:
    """A file made by FFmpeg alone: a white flash for 0.1 s every second, a 1 kHz burst on the same samples
    (per-sample ``aevalsrc``, so the onset is exact), the sound optionally delayed."""
    flash = f"color=black:s=160x96:r=30:d={seconds},drawbox=x=0:y=0:w=iw:h=ih:color=white:t=fill:enable='lt(mod(t\\,1)\\,0.1)'"
    tone = f"aevalsrc='0.5*sin(2*PI*1000*t)*lt(mod(t\\,1)\\,0.1)':s=48000:c=stereo:d={seconds}"
    if audio_delay_ms:
        tone += f",adelay={audio_delay_ms}:all=1"
    inputs = ["-f", "lavfi", "-i", flash, "-f", "lavfi", "-i", tone]
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *inputs, *ENCODE_REFERENCE, "-t", str(seconds), str(path)],
        check=True,
        timeout=60,
    )


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg command line tool to make the reference file")
def test_the_measurement_finds_ffmpegs_own_file_in_sync_and_a_priming_sized_shift_out_of_it(tmp_path: Path) -> None:
    """Checks the tool, not a sink: a file FFmpeg made measures in sync; the same with its sound 21.3 ms late
    (one AAC frame, what ignoring the priming would cost) measures 21.3 ms, over the 5 ms limit."""
    ffmpeg_flashes(tmp_path / "ffmpeg.mp4", 4)
    offsets = measure(tmp_path / "ffmpeg.mp4").offsets()
    assert len(offsets) == 4 and all(abs(offset) < 0.001 for offset in offsets), offsets
    ffmpeg_flashes(tmp_path / "late.mp4", 4, audio_delay_ms=1024 / 48)
    late = measure(tmp_path / "late.mp4").offsets()
    assert len(late) == 4 and all(abs(offset - 1024 / 48_000) < 0.001 for offset in late), late
    assert all(abs(offset) > SYNC_LIMIT_S for offset in late)


# ------------------------------------------------------------------ the stream helper's slot


def test_sound_rides_in_the_frame_slot_after_the_pixels_and_a_long_block_keeps_its_latest_part() -> None:
    pixels = bytes(range(256)) * 90
    slot = FrameSlot.create(len(pixels) + AUDIO_ALLOWANCE)
    try:
        rng = np.random.default_rng(7)
        short = AudioBlock(rng.uniform(-1, 1, (1600, 2)).astype(np.float32), 48_000, 48_000)
        long = AudioBlock(rng.uniform(-1, 1, (96_000, 2)).astype(np.float32), 96_000, 48_000)  # 2 s: over the bound
        for block, kept in ((short, 1600), (long, int(MAX_AUDIO_PER_FRAME_S * 48_000))):
            sound, description = audio_in_slot(block, len(pixels))
            buffer, seq = slot.write(pixels, sound)
            data = slot.read(buffer, seq, len(pixels) + len(sound))
            assert data is not None and data[: len(pixels)] == pixels
            back = audio_from_slot(data, description)
            assert back is not None and back.count == kept and back.sample_rate == 48_000
            assert back.end_sample == block.end_sample  # the latest sound, in its place
            assert np.array_equal(back.samples, block.samples[-kept:])
        assert audio_in_slot(None, len(pixels)) == (b"", None)
    finally:
        slot.close()


def test_frames_without_sound_in_an_output_with_sound_keep_the_track_running(tmp_path: Path) -> None:
    """The compositor loses its last input with sound for a second and gets it back: silence in between,
    and the bursts after it in their place."""
    errors = Errors()
    sink = file_sink(tmp_path, errors, path="gap.mp4")
    pattern = SyncPattern()
    frames = [pattern.frame(i) for i in range(100)]
    frames[30:60] = [SinkFrame(f.frame, f.media_time, f.fps, None) for f in frames[30:60]]
    record(sink, frames)
    assert sink.stats()["audio"]["silence_filled_seconds"] == pytest.approx(1.0, abs=0.001)
    measured = measure(tmp_path / "gap.mp4")
    assert abs(measured.audio_duration - measured.video_duration(1 / pattern.fps)) < 1 / pattern.fps
    assert len(measured.video_onsets) == 4 and len(measured.audio_onsets) == 3  # the flash at 1 s has no burst
    offsets = measured.offsets()
    assert [abs(offset) < SYNC_LIMIT_S for offset in offsets] == [True, False, True, True], offsets


def test_opus_takes_44k1_sound_resampled_to_48k_in_sync(tmp_path: Path) -> None:
    errors = Errors()
    sink = file_sink(tmp_path, errors, path="resampled.webm", codec="vp9")
    pattern = SyncPattern(sample_rate=44_100)
    record(sink, pattern.frames(100))
    assert errors.last is None, errors.messages
    stats = sink.stats()["audio"]
    assert (stats["sample_rate"], stats["encoder_sample_rate"]) == (44_100, 48_000)
    measured = measure(tmp_path / "resampled.webm")
    assert (measured.audio_codec, measured.sample_rate) in {("opus", 48_000), ("libopus", 48_000)}
    assert abs(measured.audio_duration - measured.video_duration(1 / pattern.fps)) < 1 / pattern.fps
    assert measured.dominant_frequency(measured.audio_onsets[0] + 0.01, 0.08) == pytest.approx(pattern.tone_hz, abs=15)
    assert_in_sync(measured, pattern, 100)
