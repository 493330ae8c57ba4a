"""Faults of sinks: a full disk, a reader that went away, a path that cannot be
written. Each puts only that node into its error state (reported through the
render loop's error channel, and by the daemon as ``nodestatechanged`` and in
``getpipeline``); the pipeline renders on; corrected params clear the error.
A sink that cannot keep up drops and counts frames instead of slowing the loop."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from compositord.daemon.engine import api
from compositord.daemon.engine.render.frames import OutputFrame
from compositord.daemon.engine.sinks import base as sink_base
from compositord.daemon.engine.sinks.base import ErrorLatch, Sink, SinkError, SinkFrame
from compositord.daemon.engine.sinks.file import FileSink
from compositord.daemon.engine.sinks.helper import HelperSink
from compositord.daemon.engine.sinks.y4m import Y4MSink
from compositord.daemon.state.model import NodeRecord
from compositord.tests.disk_helpers import CannotMount, small_tmpfs
from compositord.tests.sink_helpers import (
    H,
    Peer,
    W,
    decode,
    running_loop,
    sink_session,
    wait_frames_written,
    wait_until,
    y4m_pipeline,
)

pytestmark = pytest.mark.gl


async def keeps_rendering(loop: Any, frames: int = 5) -> None:
    rendered = loop.statistics().frames_rendered
    await wait_until(lambda: loop.statistics().frames_rendered >= rendered + frames)


@pytest.fixture
def tiny_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A 64 KiB tmpfs (needs root and mount(2)), about half full, mounted inside the output directory
    (``running_loop``'s ``tmp_path``): a full disk where a sink may write. The sinks' free-space floor
    is off here (these tests are about the disk filling anyway; tests/test_sink_disk.py tests the floor)."""
    monkeypatch.setattr(sink_base, "DEFAULT_MIN_FREE_DISK_BYTES", 0)
    try:
        with small_tmpfs(tmp_path / "tiny", "64k") as mountpoint:
            (mountpoint / "filler").write_bytes(b"\0" * (32 * 1024))
            yield mountpoint
    except CannotMount as exc:
        pytest.skip(str(exc))


async def test_full_disk_file_sink_errors_then_recovers(tmp_path: Path, tiny_disk: Path) -> None:
    # MP4 writes each packet as it comes (Matroska holds a cluster)
    params = {"path": f"{tiny_disk.name}/out.mp4", "preset": "ultrafast"}
    session = sink_session({"rec": ("sink::file", params)}, fps=60, pattern="smpte")
    bars = session.nodes["bars"]
    session.nodes["bars"] = NodeRecord("bars", bars.kind, {**bars.params, "animated": True, "timestamp": True})
    async with running_loop(session, tmp_path) as (loop, recorder):
        await wait_frames_written(loop, "rec", 5)
        assert recorder.error_of("rec") is None
        # The disk fills up while the sink records (another writer takes the rest).
        with open(tiny_disk / "filler", "ab", buffering=0) as filler:
            with pytest.raises(OSError):
                while True:
                    filler.write(b"\0" * 1024)
        await wait_until(lambda: recorder.error_of("rec") is not None, timeout=20)
        error = recorder.error_of("rec")
        assert error is not None and "No space left on device" in error
        await keeps_rendering(loop)
        failed = loop.sink("rec")
        assert failed is not None and failed.stats()["state"] == "error"
        good = tmp_path / "recovered.mkv"  # another container: the params are corrected whole
        loop.submit(api.ParamsUpdate("rec", {**params, "path": good.name}, None))
        await wait_until(lambda: recorder.error_of("rec") is None)
        await wait_frames_written(loop, "rec", 5)
        sink = loop.sink("rec")
        assert isinstance(sink, FileSink)
    assert len(decode(good).frames) == sink.frames_written


async def test_full_disk_y4m_is_a_node_error(tmp_path: Path, tiny_disk: Path) -> None:
    # 32 KiB left; a 160x90 frame is 21 KiB, so the second frame does not fit.
    session = sink_session({"raw": ("sink::y4m", {"path": f"{tiny_disk.name}/raw.y4m"})})
    async with running_loop(session, tmp_path) as (loop, recorder):
        await wait_until(lambda: recorder.error_of("raw") is not None)
        await keeps_rendering(loop)
    error = recorder.error_of("raw")
    assert error is not None and "No space left on device" in error


async def test_fifo_reader_going_away_then_a_new_reader(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.y4m"
    os.mkfifo(fifo)
    got: list[bytes] = []

    def read_some_then_quit() -> None:
        with open(fifo, "rb") as reader:
            got.append(reader.read(4096))

    first_reader = threading.Thread(target=read_some_then_quit, daemon=True)
    first_reader.start()
    session = sink_session({"pipe": ("sink::y4m", {"path": fifo.name})}, fps=60)
    async with running_loop(session, tmp_path) as (loop, recorder):
        await wait_until(lambda: recorder.error_of("pipe") is not None)
        error = recorder.error_of("pipe")
        assert error is not None and "reader went away" in error
        assert got and got[0].startswith(b"YUV4MPEG2 W160 H90 F60:1")
        await keeps_rendering(loop)
        # Corrected (here: the same) params again: the sink waits for the next reader, whose frames clear the error.
        second: list[int] = []
        stop_reading = threading.Event()

        def read_until_told() -> None:
            with open(fifo, "rb") as reader:
                while not stop_reading.is_set():
                    chunk = reader.read(65536)
                    if not chunk:
                        break
                    second.append(len(chunk))

        second_reader = threading.Thread(target=read_until_told, daemon=True)
        second_reader.start()
        loop.submit(api.ParamsUpdate("pipe", {"path": fifo.name}, None))
        await wait_until(lambda: recorder.error_of("pipe") is None)
        await wait_frames_written(loop, "pipe", 3)
        stop_reading.set()
    await trio.to_thread.run_sync(second_reader.join, 10.0)
    assert sum(second) > W * H


@pytest.mark.parametrize(
    ("kind", "params", "expected"),
    [
        ("sink::file", {"path": "nonexistent-dir/out.mp4"}, "no such directory in the output directory"),
        ("sink::y4m", {"path": "a-directory"}, "is a directory"),
        # Never valid params (the schema refuses them); the sink refuses them as well (e.g. rows of an older version).
        ("sink::file", {"path": "/proc/out.mp4"}, "absolute paths are refused"),
        ("sink::y4m", {"path": "../escape.y4m"}, "'..' is refused"),
    ],
)
async def test_unwritable_paths(tmp_path: Path, kind: str, params: dict[str, Any], expected: str) -> None:
    (tmp_path / "a-directory").mkdir()
    good = tmp_path / "fine.mp4"
    session = sink_session({"bad": (kind, params), "good": ("sink::file", {"path": good.name, "preset": "ultrafast"})})
    async with running_loop(session, tmp_path) as (loop, recorder):
        await wait_until(lambda: recorder.error_of("bad") is not None)
        await wait_frames_written(loop, "good", 5)  # the other sink of the same compositor is unaffected
    error = recorder.error_of("bad")
    assert error is not None and expected in error, error
    assert recorder.error_of("good") is None


class SlowSink(Sink):
    """Takes 50 ms a frame: at 120 fps its queue overflows at once."""

    kind = "sink::test-slow"
    queue_capacity = 3

    def open(self, first: SinkFrame) -> None:
        pass

    def write(self, item: SinkFrame) -> None:
        self.sleep_unless_closed(0.05)


async def test_a_slow_sink_drops_and_counts_instead_of_stalling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from compositord.daemon.engine import registry

    monkeypatch.setitem(
        registry.IMPLEMENTATIONS,
        "sink::y4m",
        registry.SinkKind(lambda node_id, params, latch, predecessor, context: SlowSink(node_id, params, latch, predecessor)),
    )
    session = sink_session({"slow": ("sink::y4m", {"path": "-"})}, fps=120)
    async with running_loop(session, tmp_path) as (loop, recorder):
        await wait_until(lambda: any(e.node_id == "slow" and e.stats["frames_dropped"] > 10 for e in recorder.stats), timeout=10)
        stats = loop.statistics()
        sink = loop.sink("slow")
        assert isinstance(sink, SlowSink)
        assert sink.frames_written < stats.frames_rendered / 2
        # The loop kept its pace: few late frames although the sink takes 6x a frame period per frame.
        assert stats.frames_late <= stats.frames_rendered // 4, stats
        emitted = [e.stats for e in recorder.stats if e.node_id == "slow"][-1]
        assert set(emitted) >= {"frames_offered", "frames_written", "frames_dropped", "queue_depth", "queue_capacity", "state"}
        assert emitted["queue_depth"] <= emitted["queue_capacity"] == 3


def test_error_latch_reports_changes_only() -> None:
    reports: list[tuple[str, str | None]] = []
    latch = ErrorLatch("n", lambda node_id, message: reports.append((node_id, message)))
    latch.set(None)
    latch.set("boom")
    latch.set("boom")
    latch.set(None)
    assert reports == [("n", "boom"), ("n", None)]


@pytest.fixture
def compositord_pipeline() -> dict[str, Any]:
    return y4m_pipeline("not-made-yet/raw.y4m")


async def test_daemon_reports_the_sink_error_and_its_clearing(compositord_daemon: Any, tmp_path: Path) -> None:
    from trio_websocket import open_websocket_url

    session = compositord_daemon.session_id
    async with open_websocket_url(compositord_daemon.url) as ws:
        peer = Peer(ws)
        with trio.fail_after(10):
            while True:
                nodes = (await peer.request("getpipeline", session_id=session))["nodes"]
                if nodes["raw"]["state"] != "ok":
                    break
                await trio.sleep(0.05)
        assert "no such directory in the output directory" in nodes["raw"]["state"]["error"]
        assert nodes["comp"]["state"] == "ok" and nodes["bars"]["state"] == "ok"
        # The sink's counters come with nodestatsupdated (at most once a second): frames it could not write.
        with trio.fail_after(5):
            stats: list[dict[str, Any]] = []
            while not any(e["node_id"] == "raw" and e["stats"]["frames_dropped"] > 0 for e in stats):
                stats += await peer.events("nodestatsupdated", 0.5)
        raw_stats = [e["stats"] for e in stats if e["node_id"] == "raw"][-1]
        assert raw_stats["state"] == "error" and raw_stats["frames_written"] == 0
        good = compositord_daemon.settings.output_dir / "fixed.y4m"
        answer = await peer.request("tunenode", session_id=session, node_id="raw", message={"UpdateParams": {"path": good.name}})
        assert answer["action"] == "success"
        changes: list[dict[str, Any]] = []
        with trio.fail_after(10):
            while not any(c["node_id"] == "raw" and c["state"] == "ok" for c in changes):
                changes += await peer.events("nodestatechanged", 0.2)
        assert (await peer.request("getpipeline", session_id=session))["nodes"]["raw"]["state"] == "ok"
    await wait_until(lambda: good.exists() and good.stat().st_size > W * H)


async def test_a_sink_fed_by_a_source_says_it_needs_a_compositor(tmp_path: Path) -> None:
    session = sink_session({})
    session.nodes["raw"] = NodeRecord("raw", "sink::y4m", {"path": "never.y4m"})
    from compositord.daemon.state.model import ConnectionRecord

    session.connections.append(ConnectionRecord("bars", "out", "raw", "in"))
    async with running_loop(session, tmp_path) as (loop, recorder):
        await wait_until(lambda: recorder.error_of("raw") is not None)
        error = recorder.error_of("raw")
        assert error is not None and "video::compositor" in error
        await keeps_rendering(loop)
        assert not (tmp_path / "never.y4m").exists()
        rewired = session.copy()
        rewired.connections = [c for c in rewired.connections if c.to_node != "raw"] + [
            ConnectionRecord("comp", "out", "raw", "in")
        ]
        loop.submit(api.TopologyUpdate(rewired))
        await wait_until(lambda: recorder.error_of("raw") is None)
        await wait_frames_written(loop, "raw", 2)


async def test_a_missing_encoder_is_a_node_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from compositord.daemon.engine.sinks import encoding

    monkeypatch.setitem(encoding.ENCODERS, "vp9", "libvpx-vp9-not-in-this-build")
    session = sink_session({"rec": ("sink::file", {"path": "out.webm", "codec": "vp9"})})
    async with running_loop(session, tmp_path) as (loop, recorder):
        await wait_until(lambda: recorder.error_of("rec") is not None)
        await keeps_rendering(loop)
    error = recorder.error_of("rec")
    assert error is not None and "no libvpx-vp9-not-in-this-build encoder" in error
    assert not (tmp_path / "out.webm").exists()


async def test_a_reader_that_stops_reading_costs_frames_not_the_loop(tmp_path: Path) -> None:
    import time

    from compositord.daemon.engine.sinks.y4m import STALLED_READER_TIMEOUT

    fifo = tmp_path / "stalled.y4m"
    os.mkfifo(fifo)
    reader_fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # opens, never reads: the pipe fills after 3 frames
    try:
        session = sink_session({"pipe": ("sink::y4m", {"path": fifo.name})}, fps=60)
        started_stop = None
        async with running_loop(session, tmp_path) as (loop, recorder):
            await wait_until(lambda: (pipe := loop.sink("pipe")) is not None and pipe.frames_dropped > 10)
            sink = loop.sink("pipe")
            assert isinstance(sink, Y4MSink)
            assert sink.frames_written <= 4
            await keeps_rendering(loop, 10)
            started_stop = time.monotonic()
        stop_took = time.monotonic() - started_stop
        assert stop_took < STALLED_READER_TIMEOUT + 3.0, f"stopping took {stop_took:.1f} s"
        assert "stopped reading" in (recorder.error_of("pipe") or "")
    finally:
        os.close(reader_fd)


class _ReportsHeldBack(HelperSink):
    """A helper sink whose reports thread starts reading only once a write has found the helper gone: the
    order in which a helper's error report and its exit can reach the engine."""

    helper_kind = "sink::none"  # the helper has no encoder of that kind: it reports so and exits

    def __init__(self) -> None:
        super().__init__("out", {}, ErrorLatch("out", lambda _node, _message: None))
        self.reports_may_start = threading.Event()
        self.found_gone = False

    def _read_reports(self) -> None:
        self.reports_may_start.wait(10)
        super()._read_reports()

    def _why_gone(self, failure: str) -> str:
        self.found_gone = True
        self.reports_may_start.set()
        return super()._why_gone(failure)


def test_a_write_that_finds_the_helper_gone_says_what_the_helper_reported() -> None:
    sink = _ReportsHeldBack()
    item = SinkFrame(OutputFrame("rgba8", 4, 4, bytes(64)), 0.0, 30)
    sink.open(item)
    try:
        with pytest.raises(SinkError) as failure:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                sink.write(item)  # queued until the helper has exited, then EPIPE
                time.sleep(0.02)
        assert sink.found_gone, "the write, not the reports thread, found the helper gone"
        assert str(failure.value) == "no helper encoder for sink::none", "the helper's own error, not 'Broken pipe'"
    finally:
        with contextlib.suppress(SinkError):
            sink.finish()
