"""Faults: signals at awkward times, kill -9, clients that stop reading or vanish, churn, render errors.

Subprocess daemons (``compositord run``) where the fault is about the
process (signals, kill -9); the in-process daemon of the test plugin
elsewhere. docs/RELIABILITY.md states what these tests hold the daemon to.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml
from trio_websocket import ConnectionClosed, open_websocket_url

from compositord.daemon.state.store import database_path
from compositord.protocol import frames
from compositord.testing import daemon_process as subprocess_daemon
from compositord.testing.daemon_process import DaemonProcess
from compositord.testing.plugin import SMALL_PIPELINE
from compositord.tests.raw_requests import ask, request_text

STOP_TIMEOUT_S = 10.0  # DEFAULT_STOP_TIMEOUT of daemon/app.py, what `compositord run` uses


# ----------------------------------------------------------------------------- subprocess daemons


@asynccontextmanager
async def daemon_process(
    tmp_path: Path, state_dir: Path | None = None, *, log_level: str = "WARNING", pipeline: dict[str, Any] | None = None
) -> AsyncIterator[DaemonProcess]:
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump(pipeline or SMALL_PIPELINE))
    async with subprocess_daemon.daemon_process(config, state_dir or tmp_path / "state", tmp_path, log_level=log_level) as daemon:
        yield daemon


# ----------------------------------------------------------------------------- SIGTERM before the first frame


async def test_sigterm_before_the_first_frame_exits_cleanly(tmp_path: Path) -> None:
    """Known issue 1: a SIGTERM during start-up made `compositord run` hang (trio's started() is a no-op
    once the caller is cancelled) or end with start()'s RuntimeError. Now: exit 0, no traceback."""
    async with daemon_process(tmp_path) as daemon:
        database = database_path(daemon.state_dir)
        # The store opens after the signal receiver is installed and before the first frame renders.
        with trio.fail_after(30):
            while not database.exists():
                await trio.sleep(0.002)
        daemon.process.send_signal(signal.SIGTERM)
        status = await daemon.wait_exit(STOP_TIMEOUT_S + 2)
        assert status == 0, daemon.stderr
        assert "Traceback" not in daemon.stderr, daemon.stderr
    # The state directory is usable afterwards: a normal start on it serves.
    async with daemon_process(tmp_path, daemon.state_dir) as again:
        await again.read_url()
        again.process.send_signal(signal.SIGTERM)
        assert await again.wait_exit(STOP_TIMEOUT_S + 2) == 0, again.stderr


# ----------------------------------------------------------------------------- a client that stops reading

BIG_OVERLAYS = [{"id": f"t{i}", "text": "x" * 1000, "font_size": 8, "opacity": 0.0} for i in range(32)]


async def test_a_client_that_stops_reading_is_cut_off_and_nobody_else_notices(tmp_path: Path) -> None:
    """The render loop keeps its rate, another client keeps getting answers and events, and the stalled
    client is closed after the send timeout. Known issue 3: its last frame was cut mid-way, so the daemon
    closes the TCP stream without a close frame (which would land inside the cut frame): the client sees 1006."""
    from compositord.daemon.config import Limits
    from compositord.testing.plugin import settings_for, start_daemon

    settings = settings_for(tmp_path / "state", SMALL_PIPELINE, limits=Limits(send_timeout=0.5))
    async with trio.open_nursery() as nursery:
        daemon = await start_daemon(nursery, settings)
        session = daemon.session_id
        async with open_websocket_url(daemon.url) as other:
            # ~33 KB of params, so that each getpipeline answer is big and socket buffers fill quickly.
            patch = {
                "action": "tunenode",
                "session_id": session,
                "node_id": "comp",
                "message": {"PatchParams": {"text_overlays": BIG_OVERLAYS}},
            }
            assert (await ask(other, "big", patch))["action"] == "success", "overlays refused"
            stats_before = await _frames_rendered(other, session)
            started = trio.current_time()
            async with open_websocket_url(daemon.url, max_message_size=1 << 20) as stalled:
                cut_reason = None
                try:
                    for i in range(400):  # ~13 MB of answers that this client never reads
                        await stalled.send_message(request_text(f"g{i}", {"action": "getpipeline", "session_id": session}))
                except ConnectionClosed as closed:
                    cut_reason = closed.reason  # on a loaded machine the send timeout can expire before all 400 are out
                # Meanwhile the other client is served: answers and events keep coming.
                for step in range(10):
                    reply = await ask(other, f"o{step}", {"action": "getpipeline", "session_id": session})
                    assert reply["action"] == "pipeline"
                    await trio.sleep(0.1)
                with trio.fail_after(15):
                    while cut_reason is None:  # the stalled client's queue, then its socket: 1006, no close frame
                        try:
                            await stalled.get_message()
                        except ConnectionClosed as closed:
                            cut_reason = closed.reason
                assert cut_reason.code == 1006, cut_reason
            elapsed = trio.current_time() - started
            stats_after = await _frames_rendered(other, session)
        fps = (stats_after - stats_before) / elapsed
        assert fps > 20, f"the render loop slowed to {fps:.1f} fps while a client stalled (30 fps configured)"
        nursery.cancel_scope.cancel()


async def _frames_rendered(ws: Any, session: str) -> int:
    """frames_rendered from the next nodestatsupdated of the compositor (at most once a second)."""
    with trio.fail_after(5):
        while True:
            payload = json.loads(await ws.get_message())["payload"]
            if payload.get("event") == "nodestatsupdated" and payload.get("node_id") == "comp":
                return int(payload["stats"]["frames_rendered"])


# ----------------------------------------------------------------------------- kill -9 during sync tunes


def _stored_sessions(database: Path) -> dict[str, Any]:
    from compositord.daemon.state.store import load_sessions

    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return load_sessions(connection)
    finally:
        connection.close()


def _integrity(database: Path) -> str:
    connection = sqlite3.connect(database)  # read-write: opening replays the WAL, as the daemon's start does
    try:
        return str(connection.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        connection.close()


async def test_kill_9_during_sync_tunes_loses_no_acknowledged_tune(tmp_path: Path) -> None:
    acknowledged = 0
    sent = 0
    async with daemon_process(tmp_path) as daemon:
        url = await daemon.read_url()
        async with open_websocket_url(url) as ws:
            kill_at = trio.current_time() + 0.6
            try:
                for step in range(1, 100_000):
                    sent = step
                    body = {"layers": {"in_0": {"opacity": step / 100_000}}, "_sender": "killed", "_rev": step}
                    await ws.send_message(
                        request_text(
                            f"t{step}",
                            {"action": "tunenode", "session_id": "pipeline", "node_id": "comp", "message": {"PatchParams": body}},
                        )
                    )
                    while True:
                        message = json.loads(await ws.get_message())
                        if message.get("correlation_id") == f"t{step}":
                            assert message["payload"]["action"] == "success", message
                            acknowledged = step
                            break
                    if trio.current_time() >= kill_at and daemon.process.poll() is None:
                        daemon.process.send_signal(signal.SIGKILL)
            except ConnectionClosed:
                pass
        assert await daemon.wait_exit(10) == -signal.SIGKILL
    assert acknowledged > 10, "too few tunes before the kill to mean anything"
    database = database_path(tmp_path / "state")
    assert _integrity(database) == "ok"
    opacity = _stored_sessions(database)["pipeline"].nodes["comp"].params["layers"]["in_0"]["opacity"]
    # Every acknowledged tune is there; the one in flight at the kill may be too.
    assert opacity * 100_000 == pytest.approx(acknowledged) or opacity * 100_000 == pytest.approx(sent), (
        opacity,
        acknowledged,
        sent,
    )
    async with daemon_process(tmp_path) as again:  # and the daemon starts on it
        url = await again.read_url()
        async with open_websocket_url(url) as ws:
            pipeline = await ask(ws, "g", {"action": "getpipeline", "session_id": "pipeline"})
            assert pipeline["nodes"]["comp"]["params"]["layers"]["in_0"]["opacity"] == opacity
        again.process.send_signal(signal.SIGTERM)
        assert await again.wait_exit(STOP_TIMEOUT_S + 2) == 0, again.stderr


# ----------------------------------------------------------------------------- SIGTERM under load


async def test_sigterm_under_load_closes_everyone_with_1001_flushes_and_exits_in_time(tmp_path: Path) -> None:
    clients = 6
    acknowledged = [0] * clients
    close_codes: list[int | None] = [None] * clients
    async with daemon_process(tmp_path) as daemon:
        url = await daemon.read_url()

        async def load(index: int, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            async with open_websocket_url(url) as ws:
                task_status.started()
                try:
                    for step in range(1, 1_000_000):
                        # sync tunes on one client's own layer, async ones on the shared one in between
                        sync = {
                            "action": "tunenode",
                            "session_id": "pipeline",
                            "node_id": "comp",
                            "message": {
                                "PatchParams": {
                                    "layers": {f"in_{index % 2}": {"z_index": step % 1000}},
                                    "text_overlays": [{"id": f"c{index}", "text": str(step)}],
                                }
                            },
                        }
                        await ws.send_message(request_text(f"s{step}", {**sync, "action": "tunenodeasync"} if step % 2 else sync))
                        if step % 2 == 0:
                            while json.loads(await ws.get_message()).get("correlation_id") != f"s{step}":
                                pass
                            acknowledged[index] = step
                except ConnectionClosed as closed:
                    assert closed.reason is not None, "trio-websocket raises ConnectionClosed with the close frame's reason"
                    close_codes[index] = closed.reason.code

        async with trio.open_nursery() as nursery:
            for index in range(clients):
                await nursery.start(load, index)
            await trio.sleep(1.0)
            signalled = trio.current_time()
            daemon.process.send_signal(signal.SIGTERM)
            status = await daemon.wait_exit(STOP_TIMEOUT_S + 2)
            stopped_in = trio.current_time() - signalled
        assert status == 0, daemon.stderr
        assert "Traceback" not in daemon.stderr, daemon.stderr
    assert stopped_in < STOP_TIMEOUT_S, f"took {stopped_in:.1f} s"
    assert close_codes == [1001] * clients
    assert min(acknowledged) > 0
    database = database_path(tmp_path / "state")
    assert _integrity(database) == "ok"
    # Overlay lists are replaced whole: the stored one is the last applied; it is no older than what was acknowledged.
    stored = _stored_sessions(database)["pipeline"].nodes["comp"].params
    (overlay,) = stored["text_overlays"]
    writer = int(overlay["id"][1:])
    assert int(overlay["text"]) >= acknowledged[writer]


async def test_sigterm_closes_clients_pushing_frames_with_1001(tmp_path: Path) -> None:
    """Clients pushing 640x360 RGBA frames as fast as they can (and reading what the daemon sends) are closed
    with 1001 like any other. A client whose WebSocket library stops reading the socket while the
    application does not take its messages (trio-websocket's default queue of one message) cannot see the
    close frame at all and sees 1006: docs/RELIABILITY.md, "Attacks tried and what held"."""
    pipeline = {
        "nodes": {
            "cam": {"kind": "video::push", "params": {"width": 640, "height": 360, "pixel_format": "rgba8"}},
            "comp": {"kind": "video::compositor", "params": {"width": 160, "height": 90, "fps": 30, "num_inputs": 1}},
        },
        "connections": [{"from_node": "cam", "from_pin": "out", "to_node": "comp", "to_pin": "in_0"}],
    }
    frame = frames.pack_frame_header("cam", 640, 360, "rgba8", 0) + bytes(640 * 360 * 4)
    close_codes: list[int | None] = [None] * 3
    pushed = [0] * 3
    async with daemon_process(tmp_path, pipeline=pipeline) as daemon:
        url = await daemon.read_url()

        async def push(index: int, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            async with open_websocket_url(url) as ws, trio.open_nursery() as nursery:
                nursery.start_soon(drain, ws)
                task_status.started()
                try:
                    while True:
                        await ws.send_message(frame)
                        pushed[index] += 1
                except ConnectionClosed as closed:
                    assert closed.reason is not None
                    close_codes[index] = closed.reason.code

        async def drain(ws: Any) -> None:
            with contextlib.suppress(ConnectionClosed):
                while True:
                    await ws.get_message()

        async with trio.open_nursery() as nursery:
            for index in range(len(close_codes)):
                await nursery.start(push, index)
            await trio.sleep(1.0)
            daemon.process.send_signal(signal.SIGTERM)
            status = await daemon.wait_exit(STOP_TIMEOUT_S + 2)
        assert status == 0, daemon.stderr
    assert min(pushed) > 0
    assert close_codes == [1001] * len(close_codes)


# ----------------------------------------------------------------------------- churn: tasks, file descriptors, memory


def _task_count() -> int:
    def count(task: trio.lowlevel.Task) -> int:
        return 1 + sum(count(child) for nursery in task.child_nurseries for child in nursery.child_tasks)

    root = trio.lowlevel.current_root_task()
    assert root is not None, "called inside trio.run"
    return count(root)


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


RSS_GROWTH_LIMIT = 16 * 1024 * 1024  # 500 cycles; a leak of one 32 KiB buffer per connection would pass 16 MB


async def _settle(baseline_tasks: int) -> None:
    with trio.move_on_after(5):
        while _task_count() > baseline_tasks:
            await trio.sleep(0.01)


async def test_500_connect_disconnect_cycles_grow_nothing(compositord_daemon: Any) -> None:
    async def cycle(i: int) -> None:
        async with open_websocket_url(compositord_daemon.url) as ws:
            reply = await ask(ws, f"c{i}", {"action": "listsessions"})
            assert reply["action"] == "sessionslisted"

    for i in range(50):  # warm-up: caches, lazily made objects
        await cycle(i)
    await trio.sleep(0.2)
    tasks, fds, rss = _task_count(), _fd_count(), _rss_bytes()
    for i in range(500):
        await cycle(i)
    await _settle(tasks)
    assert _task_count() <= tasks
    assert _fd_count() <= fds + 2  # slack for a log file or a lazily opened /dev/urandom
    assert _rss_bytes() - rss < RSS_GROWTH_LIMIT, f"RSS grew by {(_rss_bytes() - rss) / 1e6:.1f} MB"


# ----------------------------------------------------------------------------- a client gone mid-message


async def test_a_client_reset_in_the_middle_of_a_frame_disturbs_nobody(compositord_daemon: Any) -> None:
    async with open_websocket_url(compositord_daemon.url) as witness:
        await ask(witness, "warm", {"action": "listsessions"})
        await trio.sleep(0.1)
        tasks, fds = _task_count(), _fd_count()
        for round_ in range(20):
            sock = trio.socket.socket()
            await sock.connect((compositord_daemon.host, compositord_daemon.port))
            await sock.send(
                b"GET /api/v1/control HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            response = b""
            while b"\r\n\r\n" not in response:
                response += await sock.recv(4096)
            assert response.startswith(b"HTTP/1.1 101"), response
            # A masked text frame announcing 1000 bytes, of which 10 arrive, then a reset (SO_LINGER 0).
            await sock.send(bytes([0x81, 0x80 | 126]) + (1000).to_bytes(2, "big") + b"\x01\x02\x03\x04" + b"0123456789")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, (1).to_bytes(4, "little") + (0).to_bytes(4, "little"))
            sock.close()
            reply = await ask(witness, f"w{round_}", {"action": "getpipeline", "session_id": compositord_daemon.session_id})
            assert reply["action"] == "pipeline"
        await _settle(tasks)
        assert _task_count() <= tasks
        assert _fd_count() <= fds + 2


# ----------------------------------------------------------------------------- a render error


async def test_a_failed_frame_is_reported_and_the_last_good_frame_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from compositord.daemon.engine.api import EngineEvents
    from compositord.daemon.engine.loop import RenderLoop
    from compositord.daemon.engine.render import renderer as renderer_module
    from compositord.daemon.state.model import SessionRecord
    from compositord.testing.plugin import settings_for, start_daemon

    settings = settings_for(tmp_path / "state", SMALL_PIPELINE)
    loops: list[RenderLoop] = []

    def remembered_loop(record: SessionRecord, events: EngineEvents) -> RenderLoop:
        loop = RenderLoop(record, events, trio_token=trio.lowlevel.current_trio_token(), asset_dir=settings.asset_dir)
        loops.append(loop)
        return loop

    original_render = renderer_module.Renderer.draw_program
    fail_next = {"frames": 0}

    kept: dict[str, Any] = {}

    def failing_render(self: Any, scene: Any, frames: Any, **options: Any) -> Any:
        if fail_next["frames"] > 0:  # the test hook: set from the trio thread, read on the render thread
            fail_next["frames"] -= 1
            kept["before_failure"] = loops[0].latest_output("comp")
            raise RuntimeError("injected render failure")
        if "before_failure" in kept and "after_failure" not in kept:
            kept["after_failure"] = loops[0].latest_output("comp")  # the output as the failed frame left it
        return original_render(self, scene, frames, **options)

    monkeypatch.setattr(renderer_module.Renderer, "draw_program", failing_render)
    async with trio.open_nursery() as nursery:
        daemon = await start_daemon(nursery, settings, engine_factory=remembered_loop)
        (loop,) = loops
        async with open_websocket_url(daemon.url) as ws:
            good = loop.latest_output("comp")
            assert good is not None
            fail_next["frames"] = 1
            states: list[Any] = []
            with trio.fail_after(10):
                while len(states) < 2:
                    payload = json.loads(await ws.get_message())["payload"]
                    if payload.get("event") == "nodestatechanged" and payload.get("node_id") == "comp":
                        states.append(payload["state"])
            assert "injected render failure" in states[0]["error"]
            assert states[1] == "ok"  # the next frame rendered and cleared the error
            # The failed frame left the last good frame as the node's output.
            assert kept["after_failure"] is kept["before_failure"] is not None
            newer = loop.latest_output("comp")
            assert newer is not None and newer.frame_number > good.frame_number
        nursery.cancel_scope.cancel()
