"""Sinks and the file system (hardening issue #14): a free-space floor so recordings never fill the
disk, outputs opened so that a link swapped in after the sandbox check is refused (sink::file
followed it), standard output refused in the daemon, and stream errors that do not tell a closed
port from one that answered and hung up."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from compositord.daemon.engine import sandbox
from compositord.daemon.engine.sinks import base as sink_base
from compositord.daemon.engine.sinks.base import SinkError
from compositord.daemon.engine.sinks.disk_floor import CHECK_EVERY_BYTES, CHECK_INTERVAL_S, DiskFloor
from compositord.daemon.engine.sinks.stream import UNREACHABLE, with_tcp_timeout
from compositord.tests.disk_helpers import CannotMount, small_tmpfs
from compositord.tests.sink_helpers import running_loop, sink_session, wait_frames_written, wait_until

MiB = 1 << 20


# --- the floor, without GL ------------------------------------------------------------------------


class FakeDisk:
    def __init__(self, free: int) -> None:
        self.free = free
        self.calls = 0
        self.now = 0.0

    def statvfs(self, where: Any) -> os.statvfs_result:
        self.calls += 1
        return os.statvfs_result((4096, 1, 0, 0, self.free, 0, 0, 0, 0, 255))

    def clock(self) -> float:
        return self.now


def test_the_floor_checks_once_a_second_or_every_4_mib_not_per_frame() -> None:
    disk = FakeDisk(free=10 * 1024 * MiB)
    floor = DiskFloor(".", 256 * MiB, clock=disk.clock, statvfs=disk.statvfs)
    floor.check_now()
    assert disk.calls == 1
    for _ in range(100):  # 100 small frames within the same second
        floor.wrote(4096)
    assert disk.calls == 1
    disk.now += CHECK_INTERVAL_S
    floor.wrote(1)
    assert disk.calls == 2
    floor.wrote(CHECK_EVERY_BYTES)
    assert disk.calls == 3
    disk.free = 255 * MiB
    disk.now += CHECK_INTERVAL_S
    with pytest.raises(SinkError) as info:
        floor.wrote(1)
    assert "min_free_disk_bytes" in str(info.value) and "256 MiB" in str(info.value)


def test_a_floor_of_zero_never_asks_the_disk() -> None:
    disk = FakeDisk(free=0)
    floor = DiskFloor(".", 0, clock=disk.clock, statvfs=disk.statvfs)
    floor.check_now()
    floor.wrote(CHECK_EVERY_BYTES * 4)
    assert disk.calls == 0


# --- the floor in a render loop ---------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    try:
        with small_tmpfs(tmp_path / "small", "16m") as mountpoint:
            yield mountpoint
    except CannotMount as exc:
        pytest.skip(str(exc))


def with_floor(monkeypatch: pytest.MonkeyPatch, floor: int) -> None:
    """The render loop makes its sinks with the default floor (the daemon will pass its setting)."""
    monkeypatch.setattr(sink_base, "DEFAULT_MIN_FREE_DISK_BYTES", floor)


def free(path: Path) -> int:
    status = os.statvfs(path)
    return status.f_bavail * status.f_frsize


@pytest.mark.gl
@pytest.mark.parametrize("kind", ["sink::y4m", "sink::file"])
async def test_a_sink_stops_before_the_disk_fills(
    tmp_path: Path, small_disk: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    floor = 8 * MiB
    with_floor(monkeypatch, floor)
    # Leave the floor and 128 KiB free, so that even a slow encoder reaches the floor within seconds.
    (small_disk / "filler").write_bytes(b"\0" * (free(small_disk) - floor - 128 * 1024))
    params = (
        {"path": f"{small_disk.name}/out.y4m"}
        if kind == "sink::y4m"
        else {"path": f"{small_disk.name}/out.mkv", "preset": "ultrafast", "bitrate_kbps": 100_000}
    )
    session = sink_session({"out": (kind, params)}, fps=60, pattern="smpte", width=320, height=180)
    bars = session.nodes["bars"]
    session.nodes["bars"] = type(bars)("bars", bars.kind, {**bars.params, "animated": True, "timestamp": True})
    async with running_loop(session, tmp_path) as (loop, recorder):
        await wait_until(lambda: recorder.error_of("out") is not None, timeout=60)
        sink = loop.sink("out")
        assert sink is not None and sink.frames_written > 0, "it wrote until the floor"
    message = recorder.error_of("out")
    assert message is not None and "under the floor of 8.0 MiB (min_free_disk_bytes)" in message, message
    # At most CHECK_EVERY_BYTES (4 MiB) went past the floor: the disk never filled.
    assert free(small_disk) >= floor - CHECK_EVERY_BYTES
    (small_disk / "still-writable").write_bytes(b"x" * 4096)


@pytest.mark.gl
async def test_a_sink_under_the_floor_does_not_even_create_its_file(
    tmp_path: Path, small_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_floor(monkeypatch, 64 * MiB)  # more than the whole 16 MiB disk
    session = sink_session({"rec": ("sink::file", {"path": f"{small_disk.name}/rec.mp4", "preset": "ultrafast"})})
    async with running_loop(session, tmp_path) as (_, recorder):
        await wait_until(lambda: recorder.error_of("rec") is not None)
    error = recorder.error_of("rec")
    assert error is not None and "min_free_disk_bytes" in error
    assert not (small_disk / "rec.mp4").exists()


# --- links swapped in between the check and the open -------------------------------------------------


def swap_after_check(monkeypatch: pytest.MonkeyPatch, swap: Callable[[], None]) -> list[str]:
    """Make the sandbox check run ``swap`` right after it approved a path (the race, made deterministic)."""
    approved: list[str] = []
    real = sandbox.resolve_output

    def check_then_swap(root: Any, value: str, **kwargs: Any) -> sandbox.OutputTarget:
        target = real(root, value, **kwargs)
        approved.append(value)
        swap()
        return target

    # Wherever a sink looks the check up (the engine imported it by name before outputs were opened by fd).
    for module in (sandbox, sink_base):
        monkeypatch.setattr(module, "resolve_output", check_then_swap, raising=False)
    return approved


@pytest.fixture
def outputs_and_outside(tmp_path: Path) -> tuple[Path, Path]:
    outputs, outside = tmp_path / "outputs", tmp_path / "outside"
    (outputs / "day").mkdir(parents=True)
    outside.mkdir()
    (outside / "victim.mp4").write_bytes(b"keep me")
    return outputs, outside


@pytest.mark.gl
@pytest.mark.parametrize(
    ("kind", "params"),
    [
        ("sink::file", {"path": "day/rec.mp4", "preset": "ultrafast"}),
        ("sink::file", {"path": "day/rec.mp4", "preset": "ultrafast", "if_exists": "overwrite"}),
        ("sink::y4m", {"path": "day/rec.mp4"}),
    ],
)
async def test_a_directory_swapped_for_a_link_after_the_check_is_not_followed(
    outputs_and_outside: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, kind: str, params: dict[str, Any]
) -> None:
    outputs, outside = outputs_and_outside

    def swap() -> None:
        (outputs / "day").rename(outputs / "day.old")
        (outputs / "day").symlink_to(outside)

    approved = swap_after_check(monkeypatch, swap)
    session = sink_session({"out": (kind, params)})
    async with running_loop(session, outputs) as (_, recorder):
        await wait_until(lambda: recorder.error_of("out") is not None)
    assert approved == ["day/rec.mp4"]
    assert sorted(p.name for p in outside.iterdir()) == ["victim.mp4"], "nothing was created outside"
    assert (outside / "victim.mp4").read_bytes() == b"keep me"
    error = recorder.error_of("out")
    assert error is not None and "changed while it was being opened" in error


@pytest.mark.gl
@pytest.mark.parametrize(
    ("kind", "params"),
    [
        ("sink::file", {"path": "rec.mp4", "preset": "ultrafast", "if_exists": "overwrite"}),
        ("sink::file", {"path": "rec.mp4", "preset": "ultrafast"}),
        ("sink::y4m", {"path": "rec.mp4"}),
    ],
)
async def test_a_file_swapped_for_a_link_or_hard_link_after_the_check_is_not_written(
    outputs_and_outside: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, kind: str, params: dict[str, Any]
) -> None:
    outputs, outside = outputs_and_outside
    (outputs / "rec.mp4").write_bytes(b"an earlier recording")

    def swap() -> None:
        (outputs / "rec.mp4").unlink()
        (outputs / "rec.mp4").symlink_to(outside / "victim.mp4")

    swap_after_check(monkeypatch, swap)
    async with running_loop(sink_session({"out": (kind, params)}), outputs) as (loop, recorder):
        if params.get("if_exists", "new_name") == "new_name" and kind == "sink::file":
            await wait_frames_written(loop, "out", 3)  # a new name is claimed with O_EXCL: the link is left alone
        else:
            await wait_until(lambda: recorder.error_of("out") is not None)
    assert (outside / "victim.mp4").read_bytes() == b"keep me"
    assert sorted(p.name for p in outside.iterdir()) == ["victim.mp4"]


@pytest.mark.gl
async def test_a_hard_link_swapped_in_is_refused_and_not_truncated(
    outputs_and_outside: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    outputs, outside = outputs_and_outside
    swap_after_check(monkeypatch, lambda: os.link(outside / "victim.mp4", outputs / "rec.y4m"))
    async with running_loop(sink_session({"out": ("sink::y4m", {"path": "rec.y4m"})}), outputs) as (_, recorder):
        await wait_until(lambda: recorder.error_of("out") is not None)
    error = recorder.error_of("out")
    assert error is not None and "other hard links" in error
    assert (outside / "victim.mp4").read_bytes() == b"keep me"


# --- standard output -------------------------------------------------------------------------------


@pytest.mark.gl
async def test_the_daemons_y4m_sink_refuses_stdout_and_a_missing_path(tmp_path: Path) -> None:
    # Params the validation refuses (rows an older version stored): the sink refuses them as well.
    session = sink_session({"dash": ("sink::y4m", {"path": "-"}), "none": ("sink::y4m", {})})
    async with running_loop(session, tmp_path) as (_, recorder):
        await wait_until(lambda: recorder.error_of("dash") is not None and recorder.error_of("none") is not None)
    dash_error, no_path_error = recorder.error_of("dash"), recorder.error_of("none")
    assert dash_error is not None and "one-shot" in dash_error
    assert no_path_error is not None and "no path" in no_path_error


# --- stream errors say the same whatever the cause ----------------------------------------------------


def test_tcp_urls_get_a_timeout_unless_they_name_one() -> None:
    assert with_tcp_timeout("tcp://127.0.0.1:9000") == "tcp://127.0.0.1:9000?timeout=5000000"
    assert with_tcp_timeout("tcp://127.0.0.1:9000?listen=0") == "tcp://127.0.0.1:9000?listen=0&timeout=5000000"
    assert with_tcp_timeout("tcp://127.0.0.1:9000?timeout=10") == "tcp://127.0.0.1:9000?timeout=10"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_that_hangs_up() -> int:
    """A peer that accepts the connection and resets it at once."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)

    def serve() -> None:
        with listener:
            listener.settimeout(30)
            for _ in range(4):
                try:
                    connection, _ = listener.accept()
                except OSError:
                    return
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                connection.close()

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1]


@pytest.mark.gl
async def test_a_closed_port_and_a_peer_that_hangs_up_read_the_same(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    closed, hangs_up = closed_port(), port_that_hangs_up()
    sinks = {
        "closed": ("sink::stream", {"url": f"tcp://127.0.0.1:{closed}", "preset": "ultrafast"}),
        "reset": ("sink::stream", {"url": f"tcp://127.0.0.1:{hangs_up}", "preset": "ultrafast"}),
    }
    async with running_loop(sink_session(sinks), tmp_path) as (_, recorder):
        await wait_until(lambda: all(recorder.error_of(node) is not None for node in sinks), timeout=30)
    closed_error, reset_error = recorder.error_of("closed"), recorder.error_of("reset")
    assert closed_error is not None and reset_error is not None
    closed_error = closed_error.replace(str(closed), "PORT")
    reset_error = reset_error.replace(str(hangs_up), "PORT")
    assert closed_error == reset_error, (closed_error, reset_error)
    assert UNREACHABLE in closed_error
    assert "refused" not in closed_error.lower().replace("refused it", "")
    # The stream is sent from a helper process (sinks/helper.py), which logs to the daemon's stderr.
    logged = capfd.readouterr().err
    assert f"127.0.0.1:{closed}" in logged, "the details are in the daemon's log"
