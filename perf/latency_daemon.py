"""The daemon for control_latency, in its own process, with a probe on the render loop's output.

``python -m compositord.perf.latency_daemon STATE_DIR PIPELINE_FILE PROBE_FILE PROBE_ROW`` runs the
real daemon (``daemon.app.serve``, signals handled: SIGTERM drains it) and adds one output listener to
every render loop: after each frame it writes ``<time.monotonic()> <x>`` to PROBE_FILE, where x is the
first column of row PROBE_ROW whose pixel has the probe colour (-1 if none). CLOCK_MONOTONIC is one
clock for every process of the machine, so the bench compares these times with its own.
Prints ``READY <port>`` once serving.
"""

from __future__ import annotations

import atexit
import sys
import time
from pathlib import Path

PROBE_RGB = (16, 240, 32)
PROBE_COLOR = "#10F020"


def _install_probe(probe_file: Path, probe_row: int) -> None:
    import numpy as np

    from compositord.daemon.engine import loop as render_loop

    # Buffered, flushed at exit: a write system call per frame would hand the GIL away from the render
    # thread each frame, which the daemon itself does not do.
    out = probe_file.open("w", buffering=1 << 20)
    atexit.register(out.close)
    r, g, b = PROBE_RGB

    def probe(node_id: str, frame: object) -> None:
        # Runs on the render thread after every frame: one row, a few microseconds.
        row = frame.as_array()[probe_row]  # type: ignore[attr-defined]
        hits = np.flatnonzero((row[:, 0] == r) & (row[:, 1] == g) & (row[:, 2] == b))
        out.write(f"{time.monotonic():.6f} {int(hits[0]) if hits.size else -1}\n")

    class ProbedRenderLoop(render_loop.RenderLoop):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            self.add_output_listener(probe)

    # app._render_loop_factory imports RenderLoop from this module when it makes a loop.
    render_loop.RenderLoop = ProbedRenderLoop  # type: ignore[misc]


def main(argv: list[str]) -> int:
    import trio

    from compositord.daemon.app import serve
    from compositord.daemon.config import Settings

    state_dir, pipeline_file, probe_file, probe_row = Path(argv[0]), Path(argv[1]), Path(argv[2]), int(argv[3])
    _install_probe(probe_file, probe_row)
    settings = Settings(
        host="127.0.0.1", port=0, state_dir=state_dir, asset_dir=state_dir / "assets", pipeline_file=pipeline_file
    )

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            _host, port = await nursery.start(lambda task_status: serve(settings, task_status=task_status, stop_timeout=5.0))
            print(f"READY {port}", flush=True)

    trio.run(run)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
