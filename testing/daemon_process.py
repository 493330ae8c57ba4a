"""A ``compositord run`` in a subprocess, for tests and benchmarks about the process itself (signals, kill -9,
engines that hang, a soak measured from outside).

stdout and stderr go to files, never to pipes: a daemon that logs for half an hour must not block on a pipe
nobody drains. The context manager kills the process if it is still running when the block ends, so a failing
test leaves no daemon behind.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import trio

SERVING_PREFIX = "compositord: serving ws://"  # the line `compositord run` prints once it accepts connections
START_TIMEOUT_S = 60.0


class DaemonProcess:
    def __init__(self, process: trio.Process, state_dir: Path, stdout_path: Path, stderr_path: Path) -> None:
        self.process = process
        self.state_dir = state_dir
        self.stdout_path = stdout_path
        self.stderr_path = stderr_path
        self.url = ""

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    async def read_url(self, timeout: float = START_TIMEOUT_S) -> str:
        """The WebSocket URL of the serving line; an AssertionError with the log when the daemon exits first."""
        with trio.fail_after(timeout):
            while True:
                for path in (self.stdout_path, self.stderr_path):
                    for line in path.read_text(errors="replace").splitlines():
                        if line.startswith(SERVING_PREFIX):
                            self.url = line.split("serving ", 1)[1].split()[0]
                            return self.url
                if self.process.poll() is not None:
                    raise AssertionError(f"the daemon exited (status {self.process.poll()}) before serving:\n{self.stderr}")
                await trio.sleep(0.02)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1].split("/", 1)[0])

    async def wait_exit(self, timeout: float) -> int:
        with trio.fail_after(timeout):
            return await self.process.wait()


@asynccontextmanager
async def daemon_process(
    config: Path,
    state_dir: Path,
    logs_dir: Path,
    *,
    log_level: str | None = "WARNING",
    env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
) -> AsyncIterator[DaemonProcess]:
    """Start ``compositord run --port 0`` on ``config``; its logs go to files in ``logs_dir``.

    ``env`` replaces the inherited environment's entries it names. systemd's ``NOTIFY_SOCKET`` and watchdog
    variables are dropped unless given, so a test never notifies (or is watched by) a systemd that runs the suite.
    """
    stamp = time.monotonic_ns()
    stdout_path, stderr_path = logs_dir / f"daemon-stdout-{stamp}.txt", logs_dir / f"daemon-stderr-{stamp}.txt"
    environment = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONFAULTHANDLER="1")
    for systemd_variable in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        environment.pop(systemd_variable, None)
    environment.update(env or {})
    command = [sys.executable, "-m", "compositord", "run", "--port", "0", "--state-dir", str(state_dir), "--config", str(config)]
    if log_level is not None:
        command += ["--log-level", log_level]
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        process = await trio.lowlevel.open_process([*command, *extra_args], stdout=stdout, stderr=stderr, env=environment)
    try:
        yield DaemonProcess(process, state_dir, stdout_path, stderr_path)
    finally:
        if process.poll() is None:
            process.kill()
            await process.wait()
