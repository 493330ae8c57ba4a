"""The daemon for control_latency, in its own process, with a probe on the render loop's output.

``python -m compositord.perf.latency_daemon STATE_DIR PIPELINE_FILE PROBE_FILE PROBE_ROW [MODE]`` runs
the real daemon (``daemon.app.serve``, signals handled: SIGTERM drains it) with one output listener on
every render loop: after each frame it writes ``<time.monotonic()> <x>`` to PROBE_FILE, where x is the
first column of row PROBE_ROW whose pixel has the probe colour (-1 if none). CLOCK_MONOTONIC is one
clock for every process of the machine, so the bench compares these times with its own.

MODE is the engine mode: ``process`` (the default, as deployed: the probe runs in each engine
process, installed through ``EngineSettings.output_listener``) or ``thread`` (render loops in the
daemon's process, the probe added by an engine factory). Prints ``READY <port>`` once serving.
"""

from __future__ import annotations

import atexit
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from compositord.daemon.config import Settings
    from compositord.daemon.engine.api import Engine, EngineEvents, EngineFactory
    from compositord.daemon.engine.render.frames import OutputFrame
    from compositord.daemon.state.model import SessionRecord

PROBE_RGB = (16, 240, 32)
PROBE_COLOR = "#10F020"


def probe_listener(argument: str) -> Callable[[str, OutputFrame], None]:
    """The output listener that logs where the probe is; ``argument`` is ``PROBE_FILE:PROBE_ROW``.
    Runs where the render loop runs (an engine process, or the daemon's process in thread mode)."""
    import numpy as np

    path, _, row_text = argument.rpartition(":")
    probe_row = int(row_text)
    # Buffered, flushed at exit: a write system call per frame would hand the GIL away from the render
    # thread each frame, which the daemon itself does not do. Opened for appending: a restarted engine adds on.
    out = Path(path).open("a", buffering=1 << 20)  # noqa: SIM115 (open for the process's life, closed at exit)
    atexit.register(out.close)
    r, g, b = PROBE_RGB

    def probe(node_id: str, frame: OutputFrame) -> None:
        # Runs on the render thread after every frame: one row, a few microseconds.
        row = frame.as_array()[probe_row]
        hits = np.flatnonzero((row[:, 0] == r) & (row[:, 1] == g) & (row[:, 2] == b))
        out.write(f"{time.monotonic():.6f} {int(hits[0]) if hits.size else -1}\n")

    return probe


def _probed_engines(settings: Settings, probe_file: Path, probe_row: int) -> EngineFactory:
    """Thread mode: the daemon's render loops, each with the probe as an output listener."""
    import trio

    from compositord.daemon.engine.loop import RenderLoop

    probe = probe_listener(f"{probe_file}:{probe_row}")

    def make(record: SessionRecord, events: EngineEvents) -> Engine:
        loop = RenderLoop(
            record,
            events,
            trio_token=trio.lowlevel.current_trio_token(),
            asset_dir=settings.asset_dir,
            output_dir=settings.output_dir,
        )
        loop.add_output_listener(probe)
        return loop

    return make


def main(argv: list[str]) -> int:
    import trio

    from compositord.daemon.app import serve
    from compositord.daemon.config import EngineSettings, Settings

    state_dir, pipeline_file, probe_file, probe_row = Path(argv[0]), Path(argv[1]), Path(argv[2]), int(argv[3])
    mode = argv[4] if len(argv) > 4 else "process"
    engine = EngineSettings(
        mode=mode, output_listener="compositord.perf.latency_daemon:probe_listener", listener_argument=f"{probe_file}:{probe_row}"
    )
    settings = Settings(
        host="127.0.0.1",
        port=0,
        state_dir=state_dir,
        asset_dir=state_dir / "assets",
        pipeline_file=pipeline_file,
        engine=engine,
    )
    engines = _probed_engines(settings, probe_file, probe_row) if mode == "thread" else None
    from compositord.daemon.heap import freeze_startup_objects

    freeze_startup_objects()  # as compositord run does

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            _host, port = await nursery.start(
                lambda task_status: serve(settings, task_status=task_status, stop_timeout=5.0, engine_factory=engines)
            )
            print(f"READY {port}", flush=True)

    trio.run(run)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
