"""Engine processes (the default engine mode): isolation and supervision, against the daemon of the test plugin.

Each session's engine is a process of its own, supervised by the daemon
(daemon/sessions/supervisor.py). These tests kill, stop and starve engines
and check what docs/RELIABILITY.md promises: the session's nodes show an error
meanwhile and recover, the other sessions render on, the control plane keeps
answering within 100 ms, a session that keeps failing is parked (not
restarted in a loop), and the service watchdog is fed throughout. Timings
are generous (a loaded 2-core machine starts an engine process in about a
second); the figures themselves are the benchmarks' business (perf/README.md).
"""

from __future__ import annotations

import copy
import dataclasses
import io
import itertools
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio
from PIL import Image

from compositord.client import open_client
from compositord.client.errors import CompositordError
from compositord.daemon.config import EngineSettings
from compositord.testing.plugin import SMALL_PIPELINE, RunningDaemon, settings_for, start_daemon

SECOND_PIPELINE: dict[str, Any] = copy.deepcopy(SMALL_PIPELINE)
CONTROL_REPLY_BUDGET_S = 0.1  # getpipeline must answer within this while an engine fails


@asynccontextmanager
async def running_daemon(tmp_path: Path, pipeline: dict[str, Any] | None = None, **engine: Any) -> AsyncIterator[RunningDaemon]:
    settings = settings_for(tmp_path / "state", pipeline or SMALL_PIPELINE)
    settings = dataclasses.replace(settings, engine=EngineSettings(**engine))
    async with trio.open_nursery() as nursery:
        daemon = await start_daemon(nursery, settings, stop_timeout=10.0)
        yield daemon
        nursery.cancel_scope.cancel()


async def restarts_in_metrics(daemon: RunningDaemon, session_id: str) -> float:
    """``compositord_engine_restarts_total`` of a session, as Prometheus would scrape it from ``/metrics``."""
    from prometheus_client.parser import text_string_to_metric_families

    stream = await trio.open_tcp_stream(daemon.host, daemon.port)
    async with stream:
        await stream.send_all(f"GET /metrics HTTP/1.1\r\nHost: {daemon.host}\r\nConnection: close\r\n\r\n".encode())
        response = b""
        while chunk := await stream.receive_some(65536):
            response += chunk
    text = response.split(b"\r\n\r\n", 1)[1].decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "compositord_engine_restarts_total" and sample.labels.get("session") == session_id:
                return float(sample.value)
    return 0.0


async def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    with trio.move_on_after(timeout):
        while not predicate():
            await trio.sleep(0.05)
    assert predicate(), f"timed out after {timeout} s waiting for {what}"


def is_engine_process(pid: int) -> bool:
    try:
        return b"compositord.daemon.engine.process" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


class Watcher:
    """Every event of a connection, kept by kind; and a probe that times getpipeline of given sessions."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.states: list[tuple[str, str, Any]] = []  # (session, node, state) in order
        self.frames: dict[str, list[tuple[float, int]]] = {}  # session -> (time, frames_rendered) of its compositor stats
        self.slowest_reply = 0.0
        self.replies = 0
        self.views: list[tuple[float, str, dict[str, Any]]] = []  # (time, session, data with its "_" keys)

    async def collect(self) -> None:
        async for event in self.client.events():
            payload = event.payload
            if event.name == "nodestatechanged":
                self.states.append((payload["session_id"], payload["node_id"], payload["state"]))
            elif event.name == "nodeviewdataupdated":
                self.views.append((time.monotonic(), payload["session_id"], dict(payload["data"])))
            elif event.name == "nodestatsupdated" and "frames_rendered" in payload.get("stats", {}):
                self.frames.setdefault(payload["session_id"], []).append((time.monotonic(), payload["stats"]["frames_rendered"]))

    async def probe(self, session_ids: list[str]) -> None:
        while True:
            for session_id in session_ids:
                started = time.monotonic()
                await self.client.get_pipeline(session_id)
                self.slowest_reply = max(self.slowest_reply, time.monotonic() - started)
                self.replies += 1
            await trio.sleep(0.05)

    def errors_of(self, session_id: str, node_id: str) -> list[Any]:
        return [state for s, n, state in self.states if s == session_id and n == node_id]


async def engine_of(client: Any, session_id: str) -> dict[str, Any]:
    pipeline = await client.get_pipeline(session_id)
    engine: dict[str, Any] = pipeline["engine"]
    assert pipeline["state"] == engine["state"]
    return engine


async def test_each_session_renders_in_an_engine_process_of_its_own(tmp_path: Path) -> None:
    async with running_daemon(tmp_path) as daemon, open_client(daemon.url) as client:
        other = await client.create_session("other", SECOND_PIPELINE)
        first, second = await engine_of(client, daemon.session_id), await engine_of(client, other)
        assert first["mode"] == second["mode"] == "process"
        assert first["state"] == second["state"] == "running"
        assert first["pid"] != second["pid"] and first["pid"] != os.getpid()
        assert is_engine_process(first["pid"]) and is_engine_process(second["pid"])
        assert 0 < first["rss_mb"] < 2048
        listed = {entry["session_id"]: entry["state"] for entry in await client.list_sessions()}
        assert listed == {daemon.session_id: "running", other: "running"}
        # The causal rules hold across the socket: a stamped tune comes back acknowledged in the view channel.
        stamp = await client.tune(
            daemon.session_id, "comp", {"layers": {"in_0": {"rect": {"x": 8, "y": 4, "width": 80, "height": 45}}}}
        )
        with trio.fail_after(10):
            async for event in client.events():
                payload = event.payload
                if event.name == "nodeviewdataupdated" and payload["session_id"] == daemon.session_id:  # noqa: SIM102
                    if payload["data"]["_acks"].get(stamp.sender, 0) >= stamp.rev:
                        break
        await client.destroy_session(other)
        await wait_for(lambda: not is_engine_process(second["pid"]), 10, "the destroyed session's engine to exit")


PUSH_AND_PREVIEW: dict[str, Any] = {
    "nodes": {
        "cam": {"kind": "video::push", "params": {"width": 64, "height": 36, "pixel_format": "rgba8"}},
        "comp": {"kind": "video::compositor", "params": {"width": 64, "height": 36, "fps": 30, "num_inputs": 1}},
        "thumbs": {"kind": "sink::preview", "params": {"max_fps": 10}},
    },
    "connections": [
        {"from_node": "cam", "from_pin": "out", "to_node": "comp", "to_pin": "in_0"},
        {"from_node": "comp", "from_pin": "out", "to_node": "thumbs", "to_pin": "in"},
    ],
}


async def test_pushed_frames_and_previews_cross_through_shared_memory(tmp_path: Path) -> None:
    async with running_daemon(tmp_path, PUSH_AND_PREVIEW) as daemon, open_client(daemon.url) as client:
        await client.subscribe_preview(daemon.session_id, "thumbs")
        colours = [(200, 30, 40), (20, 180, 60)]
        for colour in colours:
            frame = np.empty((36, 64, 4), np.uint8)
            frame[:] = (*colour, 255)
            seen: tuple[int, ...] | None = None
            with trio.fail_after(20):
                while seen is None or max(abs(a - b) for a, b in zip(seen, colour, strict=True)) > 12:
                    await client.push_frame("cam", 64, 36, "rgba8", frame)
                    await trio.sleep(0.05)
                    try:
                        jpeg, _ = await client.get_preview(daemon.session_id, "thumbs")
                    except CompositordError as exc:
                        assert exc.code == "not_found"  # no thumbnail yet
                        continue
                    pixel = Image.open(io.BytesIO(jpeg)).convert("RGB").getpixel((32, 18))
                    assert isinstance(pixel, tuple)
                    seen = pixel


async def test_kill_9_of_an_engine_restarts_it_and_nothing_else_notices(tmp_path: Path) -> None:
    async with running_daemon(tmp_path, restart_backoff_s=0.2) as daemon, open_client(daemon.url) as client:
        other = await client.create_session("other", SECOND_PIPELINE)
        watcher = Watcher(client)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watcher.collect)
            nursery.start_soon(watcher.probe, [daemon.session_id, other])
            await wait_for(lambda: len(watcher.frames.get(other, [])) >= 2, 10, "the other session's stats")
            # A stamped tune the first engine acknowledges in its view data; the second must too.
            rect = {"x": 10, "y": 20, "width": 64, "height": 36}
            stamp = await client.tune(daemon.session_id, "comp", {"layers": {"in_0": {"rect": rect}}})

            def acked_views() -> list[tuple[float, str, dict[str, Any]]]:
                return [v for v in watcher.views if v[1] == daemon.session_id and v[2]["_acks"].get(stamp.sender, 0) >= stamp.rev]

            await wait_for(acked_views, 10, "the view ack of the tune")
            victim = (await engine_of(client, daemon.session_id))["pid"]
            seq_before = max(data["_seq"] for _, session, data in watcher.views if session == daemon.session_id)
            os.kill(victim, signal.SIGKILL)
            await wait_for(lambda: any(state != "ok" for state in watcher.errors_of(daemon.session_id, "comp")), 10, "an error")
            error = next(state for state in watcher.errors_of(daemon.session_id, "comp") if state != "ok")
            assert "restarting" in error["error"] and "SIGKILL" in error["error"]
            assert any(state != "ok" for state in watcher.errors_of(daemon.session_id, "bars"))  # every node of the session
            await wait_for(lambda: watcher.errors_of(daemon.session_id, "comp")[-1] == "ok", 30, "the node to recover")
            assert watcher.errors_of(daemon.session_id, "bars")[-1] == "ok"
            engine = await engine_of(client, daemon.session_id)
            assert engine["state"] == "running" and engine["restarts"] == 1 and engine["pid"] != victim
            assert "SIGKILL" in engine["reason"]
            assert await restarts_in_metrics(daemon, daemon.session_id) == 1
            # The new engine's view data goes on from the old one's seq and still acknowledges the tune.
            await wait_for(
                lambda: any(d["_seq"] > seq_before for _, s, d in watcher.views if s == daemon.session_id), 10, "view data"
            )
            after = [d for _, s, d in watcher.views if s == daemon.session_id and d["_seq"] > seq_before]
            assert all(d["_acks"].get(stamp.sender, 0) >= stamp.rev for d in after)
            assert after[0]["layers"][0]["x"] == rect["x"]  # rendered with the stored params
            killed_at = time.monotonic()
            await wait_for(lambda: watcher.frames[other][-1][0] > killed_at + 1.5, 10, "more stats of the other session")
            nursery.cancel_scope.cancel()
        # The other session rendered throughout: its stats (once a second) never stood still.
        samples = watcher.frames[other]
        assert all(later[1] > earlier[1] for earlier, later in itertools.pairwise(samples))
        assert max(later[0] - earlier[0] for earlier, later in itertools.pairwise(samples)) < 2.5
        assert not [s for s, _, state in watcher.states if s == other and state != "ok"]
        assert watcher.replies > 20 and watcher.slowest_reply < CONTROL_REPLY_BUDGET_S


HUGE_CANVAS = {"width": 7680, "height": 4320, "fps": 5, "num_inputs": 1}


async def test_a_stored_node_that_kills_its_engine_parks_its_session_and_the_daemon_serves(tmp_path: Path) -> None:
    """A compositor whose canvas takes its engine over the memory budget: stored, so every start
    of its engine fails again. The daemon still starts and serves; the session is parked after the
    set number of failures; a change (the fix) starts it again."""
    engine: dict[str, Any] = {
        "memory_budget_mb": 320,
        "park_after_failures": 2,
        "restart_backoff_s": 0.1,
        "start_timeout_s": 60.0,
    }
    async with running_daemon(tmp_path, **engine) as daemon, open_client(daemon.url) as client:
        doomed = await client.create_session("doomed", SECOND_PIPELINE)
        await client.tune(doomed, "comp", HUGE_CANVAS)  # stored; its engine is killed a moment later
    # The same state directory again: the stored huge canvas kills each engine of that session.
    async with running_daemon(tmp_path, **engine) as daemon, open_client(daemon.url) as client:
        healthy = await engine_of(client, daemon.session_id)
        assert healthy["state"] == "running"
        parked: dict[str, Any] = {}

        async def check() -> bool:
            parked.update(await engine_of(client, doomed))
            return parked["state"] == "parked"

        with trio.fail_after(60):
            while not await check():
                await trio.sleep(0.2)
        assert "memory" in parked["reason"] and parked["pid"] is None
        pipeline = await client.get_pipeline(doomed)
        assert "parked" in pipeline["nodes"]["comp"]["state"]["error"]
        assert {entry["session_id"]: entry["state"] for entry in await client.list_sessions()}[doomed] == "parked"
        # Parked means not restarted: still parked a while later, with the same count.
        await trio.sleep(1.0)
        assert (await engine_of(client, doomed))["restarts"] == parked["restarts"]
        # The fix starts it again.
        await client.tune(doomed, "comp", {"width": 160, "height": 90})
        with trio.fail_after(30):
            while (await engine_of(client, doomed))["state"] != "running":
                await trio.sleep(0.2)
        with trio.fail_after(10):
            while "error" in str((await client.get_pipeline(doomed))["nodes"]["comp"]["state"]):
                await trio.sleep(0.1)
        assert (await engine_of(client, daemon.session_id))["restarts"] == 0  # the other session never noticed


async def test_a_hung_engine_is_restarted_while_the_watchdog_is_fed(tmp_path: Path) -> None:
    """SIGSTOP hangs an engine as a blocking call would: no frame ends. The supervisor kills and
    restarts it after the stall limit; the service watchdog (the control process's health) is fed
    throughout, so systemd restarts nothing."""
    notify_path = tmp_path / "notify.sock"
    receiver = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    await receiver.bind(str(notify_path))
    pets: list[float] = []

    async def collect() -> None:
        while True:
            if b"WATCHDOG=1" in await receiver.recv(4096):
                pets.append(time.monotonic())

    settings = settings_for(tmp_path / "state", SMALL_PIPELINE)
    settings = dataclasses.replace(settings, engine=EngineSettings(stall_frames=30, restart_backoff_s=0.1))
    environ = {"NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "400000"}
    from compositord.daemon.app import serve

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect)
            host, port = await nursery.start(
                lambda task_status: serve(settings, task_status=task_status, handle_signals=False, environ=environ)
            )
            async with open_client(f"ws://{host}:{port}/api/v1/control") as client:
                victim = (await engine_of(client, "pipeline"))["pid"]
                os.kill(victim, signal.SIGSTOP)
                stopped_at = time.monotonic()
                try:
                    with trio.fail_after(30):
                        while (engine := await engine_of(client, "pipeline"))["restarts"] < 1 or engine["state"] != "running":
                            await trio.sleep(0.1)
                finally:
                    if is_engine_process(victim):
                        os.kill(victim, signal.SIGKILL)
                assert "no frame for" in engine["reason"]
                recovered_at = time.monotonic()
            # Fed at half the timeout (0.2 s) all along: never a gap near the timeout itself.
            during = [t for t in pets if stopped_at <= t <= recovered_at]
            assert len(during) >= (recovered_at - stopped_at) / 0.2 - 3
            gaps = [later - earlier for earlier, later in itertools.pairwise(pets)]
            assert max(gaps) < 0.4
            nursery.cancel_scope.cancel()
    finally:
        receiver.close()


@pytest.mark.parametrize("mode", ["process", "thread"])
async def test_both_engine_modes_serve_the_same_protocol(tmp_path: Path, mode: str) -> None:
    async with running_daemon(tmp_path, mode=mode) as daemon, open_client(daemon.url) as client:
        engine = await engine_of(client, daemon.session_id)
        assert engine["mode"] == mode and engine["state"] == "running"
        assert (engine["pid"] is None) == (mode == "thread")
