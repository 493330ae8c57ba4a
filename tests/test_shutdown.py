"""`compositord run` as a service: sd_notify (READY=1, WATCHDOG=1, STOPPING=1) and the SIGTERM/SIGINT drain.

The daemon runs as a subprocess, as systemd runs it, with ``NOTIFY_SOCKET``
pointing at a datagram socket this test reads and ``WATCHDOG_USEC`` set.
A connected client must see close code 1001, a change sent just before the
signal with ``tunenodeasync`` (group-committed, not yet durable when the
signal comes) must be in the database afterwards, and the process must exit
with status 0 within the stop timeout.
"""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import time
from pathlib import Path

import pytest
import trio
import yaml
from trio_websocket import ConnectionClosed, open_websocket_url

from compositord.daemon.state.store import database_path
from compositord.testing.daemon_process import daemon_process
from compositord.testing.plugin import SMALL_PIPELINE

STOP_BUDGET_S = 10.0  # the daemon's stop timeout; systemd's TimeoutStopSec is 15 s


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_drains_clients_flushes_store_and_notifies(tmp_path: Path, signum: int) -> None:
    state_dir = tmp_path / "state"
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump(SMALL_PIPELINE))
    notify_path = tmp_path / "notify.sock"
    receiver = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    await receiver.bind(str(notify_path))
    env = {"NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "400000"}
    notifications: list[str] = []

    async def collect() -> None:
        while True:
            notifications.extend((await receiver.recv(4096)).decode().splitlines())

    try:
        async with daemon_process(config, state_dir, tmp_path, env=env) as daemon, trio.open_nursery() as nursery:
            process = daemon.process
            nursery.start_soon(collect)
            url = await daemon.read_url()
            assert "READY=1" in notifications or await _wait_for(notifications, "READY=1")
            async with open_websocket_url(url) as ws:
                tune = {
                    "type": "request",
                    "correlation_id": "t",
                    "payload": {
                        "action": "tunenodeasync",
                        "session_id": "pipeline",
                        "node_id": "comp",
                        "message": {"PatchParams": {"layers": {"in_0": {"opacity": 0.375}}}},
                    },
                }
                await ws.send_message(json.dumps(tune))
                # the change is applied when its event arrives; it is not yet committed (group commit)
                with trio.fail_after(10):
                    while True:
                        message = json.loads(await ws.get_message())
                        if message["payload"].get("event") == "nodeparamschanged":
                            break
                assert await _wait_for(notifications, "WATCHDOG=1")
                signalled_at = time.monotonic()
                process.send_signal(signum)
                with trio.fail_after(STOP_BUDGET_S):
                    with pytest.raises(ConnectionClosed) as closed:
                        while True:
                            await ws.get_message()
                assert closed.value.reason is not None and closed.value.reason.code == 1001
            with trio.fail_after(STOP_BUDGET_S):
                status = await process.wait()
            elapsed = time.monotonic() - signalled_at
            assert status == 0
            assert elapsed < STOP_BUDGET_S
            assert await _wait_for(notifications, "STOPPING=1")
            nursery.cancel_scope.cancel()
    finally:
        receiver.close()
    assert notifications.index("READY=1") < notifications.index("STOPPING=1")
    database = database_path(state_dir)
    with sqlite3.connect(database) as db:
        (params_text,) = db.execute("SELECT params FROM nodes WHERE session_id = 'pipeline' AND node_id = 'comp'").fetchone()
    assert json.loads(params_text)["layers"]["in_0"]["opacity"] == 0.375


async def _wait_for(notifications: list[str], line: str, timeout: float = 10.0) -> bool:
    with trio.move_on_after(timeout):
        while line not in notifications:
            await trio.sleep(0.02)
    return line in notifications
