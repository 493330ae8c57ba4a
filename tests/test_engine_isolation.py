"""The three client messages that used to freeze the whole daemon, and SIGTERM with recordings running.

Each was a node whose output open blocks inside FFmpeg with the GIL held
(KNOWN-TO-WORK.md): a ``sink::stream`` with a ``listen`` URL nobody connects
to, a ``sink::stream`` to an RTMP peer that accepts TCP and never answers, a
``sink::file`` at a FIFO in the output directory. Now the first shows
``connecting``, the second an error once its connect timeout runs out, the
third an error at once; the session's own compositor and the other sessions
render on, ``getpipeline`` answers within 100 ms throughout, and SIGTERM
drains the daemon in time with every recording finished and playable, also
while one engine is stuck (SIGSTOP) and has to be killed.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import pytest
import trio
import yaml

from compositord.client import open_client
from compositord.daemon.config import EngineSettings
from compositord.daemon.engine.sinks.helper import CONNECT_TIMEOUT_S
from compositord.testing.daemon_process import daemon_process
from compositord.testing.plugin import SMALL_PIPELINE, settings_for, start_daemon

CONTROL_REPLY_BUDGET_S = 0.1
STOP_TIMEOUT_S = 10.0  # what `compositord run` uses (daemon/app.py DEFAULT_STOP_TIMEOUT)


def free_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def silent_peer(*, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """An 'RTMP server' that accepts TCP connections and never says a word."""
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[Any] = []
    try:
        task_status.started(listener.getsockname()[1])
        while True:
            connection, _ = await listener.accept()
            held.append(connection)
    finally:
        for connection in held:
            connection.close()
        listener.close()


def freezing_nodes(listen_port: int, silent_port: int) -> dict[str, dict[str, Any]]:
    return {
        "listening": {
            "kind": "sink::stream",
            "params": {"url": f"tcp://127.0.0.1:{listen_port}?listen=1", "preset": "ultrafast"},
        },
        "silent": {
            "kind": "sink::stream",
            "params": {"url": f"rtmp://127.0.0.1:{silent_port}/live/key", "format": "flv", "preset": "ultrafast"},
        },
        "fifo": {"kind": "sink::file", "params": {"path": "pipe.mp4", "if_exists": "overwrite"}},
    }


class Observer:
    """The control plane as a client sees it: latency of getpipeline, node states, every node's latest stats."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.slowest = 0.0
        self.replies = 0
        self.pipelines: dict[str, dict[str, Any]] = {}
        self.stats: dict[tuple[str, str], dict[str, Any]] = {}  # (session, node) -> the latest nodestatsupdated

    async def collect(self) -> None:
        async for event in self.client.events():
            payload = event.payload
            if event.name == "nodestatsupdated":
                self.stats[payload["session_id"], payload["node_id"]] = dict(payload["stats"])

    async def fresh_stats(self, session_id: str, node_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """The node's stats sent after this call (they come once a second)."""
        self.stats.pop((session_id, node_id), None)
        await wait_for(lambda: (session_id, node_id) in self.stats, timeout, f"stats of {node_id}")
        return self.stats[session_id, node_id]

    async def run(self, session_ids: list[str]) -> None:
        while True:
            for session_id in session_ids:
                started = time.monotonic()
                self.pipelines[session_id] = dict(await self.client.get_pipeline(session_id))
                self.slowest = max(self.slowest, time.monotonic() - started)
                self.replies += 1
            await trio.sleep(0.05)

    def state(self, session_id: str, node_id: str) -> Any:
        return self.pipelines.get(session_id, {}).get("nodes", {}).get(node_id, {}).get("state")


async def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    with trio.move_on_after(timeout):
        while not predicate():
            await trio.sleep(0.05)
    assert predicate(), f"timed out after {timeout} s waiting for {what}"


async def stats_of(client: Any, session_id: str, node_id: str, timeout: float = 10.0) -> dict[str, Any]:
    with trio.fail_after(timeout):
        async for event in client.events():
            payload = event.payload
            if event.name == "nodestatsupdated" and payload["session_id"] == session_id and payload["node_id"] == node_id:
                return dict(payload["stats"])
    raise AssertionError("the event stream ended")


async def test_the_three_freezing_nodes_no_longer_freeze_anything(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "state", SMALL_PIPELINE)
    output_dir = settings.output_dir
    assert output_dir is not None
    output_dir.mkdir(parents=True)
    os.mkfifo(output_dir / "pipe.mp4")
    async with trio.open_nursery() as nursery:
        silent_port = await nursery.start(silent_peer)
        daemon = await start_daemon(nursery, settings)
        async with open_client(daemon.url) as client:
            other = await client.create_session("other", copy.deepcopy(SMALL_PIPELINE))
            observer = Observer(client)
            # The observer's tasks use the client, so they end inside its block, before it closes.
            async with trio.open_nursery() as watching:
                watching.start_soon(observer.run, [daemon.session_id, other])
                watching.start_soon(observer.collect)
                before = await observer.fresh_stats(daemon.session_id, "comp")
                other_before = await observer.fresh_stats(other, "comp")
                added_at = time.monotonic()
                for node_id, node in freezing_nodes(free_tcp_port(), silent_port).items():
                    await client.add_node(daemon.session_id, node_id, node["kind"], node["params"])
                    await client.connect(daemon.session_id, "comp", "out", node_id, "in")
                # The FIFO: refused at once, before FFmpeg would open it.
                await wait_for(lambda: isinstance(observer.state(daemon.session_id, "fifo"), dict), 10, "the FIFO's error")
                assert "FIFO" in observer.state(daemon.session_id, "fifo")["error"]
                # The listener: connecting, as long as nobody connects; the node itself is fine.
                with trio.fail_after(10):
                    while (await observer.fresh_stats(daemon.session_id, "listening"))["state"] != "connecting":
                        pass
                assert observer.state(daemon.session_id, "listening") == "ok"
                # The silent RTMP peer: an error once the connect timeout has run out.
                await wait_for(
                    lambda: isinstance(observer.state(daemon.session_id, "silent"), dict),
                    CONNECT_TIMEOUT_S + 10,
                    "the silent peer's error",
                )
                assert "no answer" in observer.state(daemon.session_id, "silent")["error"]
                assert time.monotonic() - added_at >= CONNECT_TIMEOUT_S - 1
                # Meanwhile the session's own compositor rendered on, at its rate, and so did the other session.
                after = await observer.fresh_stats(daemon.session_id, "comp")
                other_after = await observer.fresh_stats(other, "comp")
                elapsed = time.monotonic() - added_at
                assert after["frames_rendered"] - before["frames_rendered"] >= 30 * elapsed * 0.6
                assert after["frames_dropped"] - before["frames_dropped"] <= 30 * elapsed * 0.2
                assert other_after["frames_rendered"] - other_before["frames_rendered"] >= 30 * elapsed * 0.6
                assert observer.replies > 50 and observer.slowest < CONTROL_REPLY_BUDGET_S
                assert observer.pipelines[daemon.session_id]["state"] == "running"
                watching.cancel_scope.cancel()
        nursery.cancel_scope.cancel()


async def test_a_listen_url_binds_loopback_only_unless_the_operator_allows_more(tmp_path: Path) -> None:
    port = free_tcp_port()
    for allowed, expect_error in ((False, True), (True, False)):
        settings = settings_for(tmp_path / f"state-{allowed}", SMALL_PIPELINE)
        # The destination passes validation in both runs: what is under test is the engine's own listen rule.
        settings = dataclasses.replace(
            settings, allowed_stream_destinations=(*settings.allowed_stream_destinations, "tcp://0.0.0.0")
        )
        if allowed:
            settings = dataclasses.replace(settings, engine=EngineSettings(listen_hosts=("127.0.0.1", "0.0.0.0")))
        async with trio.open_nursery() as nursery:
            daemon = await start_daemon(nursery, settings)
            async with open_client(daemon.url) as client:
                await client.add_node(daemon.session_id, "open", "sink::stream", {"url": f"tcp://0.0.0.0:{port}?listen=1"})
                await client.connect(daemon.session_id, "comp", "out", "open", "in")
                if expect_error:
                    with trio.fail_after(10):
                        while not isinstance(
                            state := (await client.get_pipeline(daemon.session_id))["nodes"]["open"]["state"], dict
                        ):
                            await trio.sleep(0.05)
                    assert "listen" in state["error"] and "0.0.0.0" in state["error"]
                else:
                    with trio.fail_after(10):
                        while (await stats_of(client, daemon.session_id, "open"))["state"] != "connecting":
                            pass
                    assert (await client.get_pipeline(daemon.session_id))["nodes"]["open"]["state"] == "ok"
            nursery.cancel_scope.cancel()


def recording_pipeline(path: str) -> dict[str, Any]:
    pipeline = copy.deepcopy(SMALL_PIPELINE)
    pipeline["nodes"]["rec"] = {"kind": "sink::file", "params": {"path": path, "preset": "ultrafast"}}
    pipeline["connections"].append({"from_node": "comp", "from_pin": "out", "to_node": "rec", "to_pin": "in"})
    return pipeline


def decoded_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


@pytest.mark.slow
async def test_sigterm_drains_every_engine_in_time_even_with_one_stuck_and_the_freezers_in_place(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    outputs = state_dir / "outputs"
    outputs.mkdir(parents=True)
    os.mkfifo(outputs / "pipe.mp4")
    async with trio.open_nursery() as nursery:
        silent_port = await nursery.start(silent_peer)
        pipeline = recording_pipeline("main.mp4")
        for node_id, node in freezing_nodes(free_tcp_port(), silent_port).items():
            pipeline["nodes"][node_id] = node
            pipeline["connections"].append({"from_node": "comp", "from_pin": "out", "to_node": node_id, "to_pin": "in"})
        config = tmp_path / "pipeline.yaml"
        config.write_text(yaml.safe_dump(pipeline))
        stuck_pid: int | None = None
        async with daemon_process(config, state_dir, tmp_path, log_level=None) as daemon:
            try:
                async with open_client(await daemon.read_url()) as client:
                    stuck = await client.create_session("stuck", recording_pipeline("stuck.mp4"))
                    await trio.sleep(2.0)  # both record for a while
                    stuck_pid = (await client.get_pipeline(stuck))["engine"]["pid"]
                os.kill(stuck_pid, signal.SIGSTOP)  # hangs as an engine stuck in a blocking call would
                signalled = time.monotonic()
                daemon.process.send_signal(signal.SIGTERM)
                status = await daemon.wait_exit(STOP_TIMEOUT_S + 5)
                took = time.monotonic() - signalled
            finally:
                if stuck_pid is not None:
                    with contextlib.suppress(ProcessLookupError):  # it may have gone already
                        os.kill(stuck_pid, signal.SIGKILL)
            log = daemon.stderr
        assert status == 0, log
        assert took < STOP_TIMEOUT_S + 1.0, log
        assert "did not finish" in log  # the stuck engine was killed, not waited for past the deadline
        assert decoded_frames(outputs / "main.mp4") >= 10  # the other session's recording plays
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("tcp://127.0.0.1:9000?listen=1", False),
        ("tcp://localhost:9000?listen", False),
        ("tcp://[::1]:9000?listen=2", False),
        ("tcp://0.0.0.0:9000?listen=1", True),
        ("tcp://[::]:9000?listen=1", True),
        ("tcp://192.0.2.7:9000?listen=1", True),
        ("tcp://:9000?listen=1", True),
        ("tcp://192.0.2.7:9000?listen=0", False),  # not a listener: connects out
        ("rtmp://0.0.0.0:1935/live/key?listen=1", True),
    ],
)
def test_which_listen_urls_are_refused(url: str, refused: bool) -> None:
    from compositord.daemon.engine.sinks.base import SinkError
    from compositord.daemon.engine.sinks.stream import target

    params = {"url": url, "format": "flv" if url.startswith("rtmp") else "mpegts"}
    if refused:
        with pytest.raises(SinkError, match="listen URL may bind only"):
            target(params)
    else:
        # An outgoing tcp:// connection also gets a connect and write timeout (sinks/stream.py); a listener does not.
        expected = url if "listen=0" not in url else url + "&timeout=5000000"
        assert target(params)[0] == expected
