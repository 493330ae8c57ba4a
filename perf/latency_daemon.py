"""The daemon for control_latency, in its own process, with a probe on the render loop's output.

``python -m compositord.perf.latency_daemon STATE_DIR PIPELINE_FILE PROBE_FILE PROBE_ROW`` runs the
real daemon (``daemon.app.serve``, signals handled: SIGTERM drains it) with an engine factory that
adds one output listener to every render loop: after each frame it writes ``<time.monotonic()> <x>``
to PROBE_FILE, where x is the first column of row PROBE_ROW whose pixel has the probe colour (-1 if
none). CLOCK_MONOTONIC is one
clock for every process of the machine, so the bench compares these times with its own.
Prints ``READY <port>`` once serving.
"""

from __future__ import annotations

import atexit
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from compositord.daemon.config import Settings
    from compositord.daemon.engine.api import Engine, EngineEvents, EngineFactory
    from compositord.daemon.engine.render.frames import OutputFrame
    from compositord.daemon.state.model import SessionRecord

PROBE_RGB = (16, 240, 32)
PROBE_COLOR = "#10F020"


def _probed_engines(settings: Settings, probe_file: Path, probe_row: int) -> EngineFactory:
    """The daemon's render loops, each with the probe as an output listener."""
    import numpy as np
    import trio

    from compositord.daemon.engine.loop import RenderLoop

    # Buffered, flushed at exit: a write system call per frame would hand the GIL away from the render
    # thread each frame, which the daemon itself does not do.
    out = probe_file.open("w", buffering=1 << 20)
    atexit.register(out.close)
    r, g, b = PROBE_RGB

    def probe(node_id: str, frame: OutputFrame) -> None:
        # Runs on the render thread after every frame: one row, a few microseconds.
        row = frame.as_array()[probe_row]
        hits = np.flatnonzero((row[:, 0] == r) & (row[:, 1] == g) & (row[:, 2] == b))
        out.write(f"{time.monotonic():.6f} {int(hits[0]) if hits.size else -1}\n")

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
    from compositord.daemon.config import Settings

    state_dir, pipeline_file, probe_file, probe_row = Path(argv[0]), Path(argv[1]), Path(argv[2]), int(argv[3])
    settings = Settings(
        host="127.0.0.1", port=0, state_dir=state_dir, asset_dir=state_dir / "assets", pipeline_file=pipeline_file
    )
    engines = _probed_engines(settings, probe_file, probe_row)

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
