"""sd_notify with the standard library, and a watchdog fed by render progress.

The protocol is one datagram of ``KEY=VALUE`` lines to the AF_UNIX socket
named by ``$NOTIFY_SOCKET``; a leading ``@`` names an abstract socket (the
``@`` stands for a NUL byte). Without ``$NOTIFY_SOCKET`` (not under systemd)
every call is a no-op. Sending never blocks: a full socket buffer drops the
message, which systemd tolerates for WATCHDOG=1 and STATUS=.

The watchdog pets systemd (WATCHDOG=1) at half of ``$WATCHDOG_USEC`` only
while every render loop has completed a frame recently. A hung GL thread
stops the petting, and systemd restarts the service; petting from a timer
alone would hide exactly the failure the watchdog exists for.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping

import trio


def _address(value: str) -> str | bytes:
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


class Notifier:
    """Sends sd_notify messages to ``$NOTIFY_SOCKET`` (read once, at construction)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        socket_name = env.get("NOTIFY_SOCKET", "")
        self._address: str | bytes | None = _address(socket_name) if socket_name else None
        self._socket: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *lines: str) -> bool:
        """Send ``lines`` as one datagram; True when it was handed to the socket."""
        if self._address is None:
            return False
        if any("\n" in line for line in lines):
            raise ValueError("an sd_notify line must not contain a newline")
        if self._socket is None:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.setblocking(False)
        try:
            self._socket.sendto("\n".join(lines).encode(), self._address)
        except OSError:
            # A full buffer, or a manager that went away: never worth crashing the daemon for.
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def watchdog_timeout(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds of ``$WATCHDOG_USEC`` when the watchdog is meant for this process, else None."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid.strip() != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1_000_000 if value > 0 else None


class Watchdog:
    """Pets systemd every ``timeout / 2`` while render loops make progress.

    ``progress()`` gives the ``last_progress()`` (``time.monotonic()``) of every
    running render loop; the service is healthy when each is younger than
    ``stall_after`` (default: the watchdog timeout). No loops at all is
    healthy: nothing is there to hang.
    """

    def __init__(
        self,
        notifier: Notifier,
        progress: Callable[[], Iterable[float]],
        timeout: float,
        *,
        stall_after: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if timeout <= 0:
            raise ValueError("the watchdog timeout must be positive")
        self._notifier = notifier
        self._progress = progress
        self.timeout = timeout
        self.stall_after = timeout if stall_after is None else stall_after
        self._clock = clock
        self.pets = 0
        self.withheld = 0

    def healthy(self) -> bool:
        now = self._clock()
        return all(now - last <= self.stall_after for last in self._progress())

    def tick(self) -> bool:
        """Pet once if healthy; True when WATCHDOG=1 was sent."""
        if self.healthy():
            self.pets += 1
            self._notifier.watchdog()
            return True
        self.withheld += 1
        return False

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            self.tick()
            await trio.sleep(self.timeout / 2)


def watchdog_from_environment(
    notifier: Notifier, progress: Callable[[], Iterable[float]], environ: Mapping[str, str] | None = None
) -> Watchdog | None:
    """The watchdog systemd asked for (``WatchdogSec=``), or None when it asked for none."""
    timeout = watchdog_timeout(environ)
    if timeout is None or not notifier.enabled:
        return None
    return Watchdog(notifier, progress, timeout)
