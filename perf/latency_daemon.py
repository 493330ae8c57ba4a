"""The daemon for control_latency, in its own process, with a probe on the render loop's output.

``python -m compositord.perf.latency_daemon STATE_DIR PIPELINE_FILE PROBE_FILE PROBE_ROW [PACE_MS]`` runs the
real daemon (``daemon.app.serve``, signals handled: SIGTERM drains it) and adds one output listener to
every render loop: after each frame it writes ``<time.monotonic()> <x>`` to PROBE_FILE, where x is the
first column of row PROBE_ROW whose pixel has the probe colour (-1 if none). CLOCK_MONOTONIC is one
clock for every process of the machine, so the bench compares these times with its own.
Prints ``READY <port>`` once serving.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

PROBE_RGB = (16, 240, 32)
PROBE_COLOR = "#10F020"


def _install_probe(probe_file: Path, probe_row: int) -> None:
    import numpy as np

    from compositord.daemon import render_loop

    out = probe_file.open("w", buffering=1)
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


def _install_params_pacing(interval: float) -> object:
    """EXPERIMENT (``--pace-params-ms``), not the daemon's behaviour: publish each node's
    ``nodeparamschanged`` at most once per ``interval`` (the latest one; each carries the whole
    params and acks, so nothing is lost but intermediate states). Returns the flusher task to run.
    It estimates what bounding the params fan-out by the frame rate would buy at many clients."""
    import trio

    from compositord.daemon import hub as hub_module

    pending: dict[tuple[int, object], tuple[object, str]] = {}
    original = hub_module.Hub.publish

    def publish(self: object, text: str, coalesce_key: object = None) -> None:
        if isinstance(coalesce_key, tuple) and coalesce_key and coalesce_key[-1] == "params":
            pending[(id(self), coalesce_key)] = (self, text)
            return
        original(self, text, coalesce_key)  # type: ignore[arg-type]

    async def flusher() -> None:
        while True:
            await trio.sleep(interval)
            items = list(pending.items())
            pending.clear()
            for (_, key), (hub, text) in items:
                original(hub, text, key)  # type: ignore[arg-type]

    hub_module.Hub.publish = publish  # type: ignore[method-assign]
    return flusher


def main(argv: list[str]) -> int:
    import trio

    from compositord.daemon.app import serve
    from compositord.daemon.config import Settings

    state_dir, pipeline_file, probe_file, probe_row = Path(argv[0]), Path(argv[1]), Path(argv[2]), int(argv[3])
    pace_ms = float(argv[4]) if len(argv) > 4 else 0.0
    _install_probe(probe_file, probe_row)
    flusher = _install_params_pacing(pace_ms / 1000.0) if pace_ms > 0 else None
    settings = Settings(host="127.0.0.1", port=0, state_dir=state_dir, asset_dir=state_dir / "assets", pipeline_file=pipeline_file)

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            if flusher is not None:
                nursery.start_soon(flusher)  # type: ignore[arg-type]
            _host, port = await nursery.start(lambda task_status: serve(settings, task_status=task_status, stop_timeout=5.0))
            print(f"READY {port}", flush=True)

    trio.run(run)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
