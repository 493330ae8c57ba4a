"""sd_notify against a fake NOTIFY_SOCKET, and the progress-driven watchdog."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from compositord.daemon.notify import Notifier, Watchdog, watchdog_from_environment, watchdog_timeout


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    sock.bind(path)
    sock.settimeout(2)
    yield sock, path
    sock.close()


def received(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


def test_ready_status_stopping_reach_the_socket(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    notifier = Notifier({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    assert notifier.ready("serving 1 pipeline")
    assert received(sock) == "READY=1\nSTATUS=serving 1 pipeline"
    assert notifier.status("draining")
    assert received(sock) == "STATUS=draining"
    assert notifier.stopping()
    assert received(sock) == "STOPPING=1"
    assert notifier.watchdog()
    assert received(sock) == "WATCHDOG=1"
    with pytest.raises(ValueError, match="newline"):
        notifier.status("two\nlines")
    notifier.close()


def test_abstract_socket_with_leading_at() -> None:
    name = f"compositord-test-{uuid.uuid4()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(2)
    try:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert received(sock) == "READY=1"
    finally:
        sock.close()


def test_without_notify_socket_everything_is_a_no_op(tmp_path: Path) -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.ready() is False
    # A socket that has gone away is not an error for the daemon either.
    assert Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}).ready() is False


def test_watchdog_timeout_from_environment() -> None:
    assert watchdog_timeout({}) is None
    assert watchdog_timeout({"WATCHDOG_USEC": "3000000"}) == 3.0
    assert watchdog_timeout({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}) == 3.0
    assert watchdog_timeout({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid() + 1)}) is None
    assert watchdog_timeout({"WATCHDOG_USEC": "nonsense"}) is None
    assert watchdog_from_environment(Notifier({}), lambda: [], {"WATCHDOG_USEC": "1000000"}) is None


def test_watchdog_pets_only_while_render_loops_progress(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    now = [100.0]
    progress = {"a": 100.0, "b": 100.0}
    watchdog = Watchdog(Notifier({"NOTIFY_SOCKET": path}), lambda: progress.values(), timeout=2.0, clock=lambda: now[0])
    assert watchdog.tick()
    assert received(sock) == "WATCHDOG=1"
    now[0] = 101.9
    assert watchdog.tick()  # both within 2 s
    assert received(sock) == "WATCHDOG=1"
    now[0] = 102.5
    progress["a"] = 102.5
    assert not watchdog.tick()  # loop "b" has not finished a frame for 2.5 s: hung
    sock.settimeout(0.05)
    with pytest.raises(TimeoutError):
        sock.recv(4096)
    progress.clear()
    assert watchdog.tick()  # no loops: nothing can hang
    assert (watchdog.pets, watchdog.withheld) == (3, 1)


async def test_watchdog_task_pets_at_half_the_timeout(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"}
    last_progress = [time.monotonic()]
    watchdog = watchdog_from_environment(Notifier(env), lambda: [last_progress[0]], env)
    assert watchdog is not None and watchdog.timeout == 0.2
    async with trio.open_nursery() as nursery:
        await nursery.start(watchdog.run)
        for _ in range(5):
            last_progress[0] = time.monotonic()
            await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    # 0.25 s at one pet per 0.1 s: the first at once, then two or three more.
    assert 3 <= watchdog.pets <= 4
    assert watchdog.withheld == 0
    sock.setblocking(False)
    messages = []
    while True:
        try:
            messages.append(received(sock))
        except BlockingIOError:
            break
    assert messages == ["WATCHDOG=1"] * watchdog.pets
