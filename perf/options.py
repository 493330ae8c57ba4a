"""What every scenario gets from the command line, and where it prints."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, TextIO


@dataclass
class BenchOptions:
    frames: int | None = None  # None: the scenario's default
    iterations: int | None = None
    compare: bool = False
    quick: bool = False
    startup_correction: bool = True
    profile: bool = False
    seconds: float | None = None  # control_latency: seconds of edits per config (None: the scenario's default)
    observers: str = "raw"  # control_latency: clients that only watch read "raw" (parse only) or through the "client" library
    editors: str = "raw"  # control_latency: editing clients in a process of their own over picows ("raw") or trio ("client")
    watchers_nice: int = 0  # control_latency: nice steps down for the watching clients' process
    daemon_session: str = "own"  # control_latency: the daemon in a session of its own (as a service) or the bench's ("shared")
    engine_mode: str = "process"  # control_latency: the daemon's engine mode, or "both" (interleaved, same run)
    sessions: tuple[int, ...] = (1, 2, 4, 8)  # sessions: the session counts to run
    jitter: bool = False  # control_latency: each edit at a random point of its period
    tune_log: str | None = None  # control_latency: append every tune's send and ack times here (JSON lines)
    latency_configs: tuple[tuple[int, int], ...] = ()  # control_latency: (clients, editing) to run; () = the scenario's
    out: TextIO = field(default_factory=lambda: sys.stdout)

    def say(self, *lines: Any) -> None:
        for line in lines:
            print(line, file=self.out, flush=True)

    def frames_or(self, default: int, quick: int) -> int:
        return self.frames if self.frames is not None else (quick if self.quick else default)

    def iterations_or(self, default: int, quick: int) -> int:
        return self.iterations if self.iterations is not None else (quick if self.quick else default)
