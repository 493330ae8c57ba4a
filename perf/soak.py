"""Soak mode: ``compositord bench soak --minutes N`` (also ``python -m compositord.perf.soak``).

Runs ``compositord run`` as a subprocess (a 640x360 compositor at 30 fps:
colorbars, a second input in auto-PiP, a text overlay) and 20 clients of the
client library in this process. Each client tunes a layer or an overlay about
ten times a second (sync and async tunes mixed) and reads every event; one
client in turn drops its connection and reconnects every ten seconds. Every
``--interval`` seconds a line reports the daemon's RSS and open file
descriptors (from /proc/PID) and the compositor's frame statistics
(``nodestatsupdated``: the frame rate achieved, render ms p50/p99, late and dropped frames), plus
the tunes acknowledged and the p99 of a sync tune's round trip. The end
prints a summary (growth of RSS and fds between the first and last sample)
as one JSON line starting with ``SOAK``.

Not in CI: docs/RELIABILITY.md holds the figures of a run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
import yaml

from compositord.testing.daemon_process import daemon_process
from compositord.testing.dropping_proxy import DroppingProxy

SESSION = "soak"
CLIENTS = 20
FPS = 30


def soak_pipeline(width: int = 640, height: int = 360) -> dict[str, Any]:
    return {
        "nodes": {
            "bars": {"kind": "video::colorbars", "params": {"width": width, "height": height, "pattern": "smpte"}},
            "ramp": {"kind": "video::colorbars", "params": {"width": width // 2, "height": height // 2, "pattern": "ramp"}},
            "comp": {
                "kind": "video::compositor",
                "params": {
                    "width": width,
                    "height": height,
                    "fps": FPS,
                    "num_inputs": 4,
                    "text_overlays": [{"id": "title", "text": "soak", "font_size": 24}],
                },
            },
        },
        "connections": [
            {"from_node": "bars", "from_pin": "out", "to_node": "comp", "to_pin": "in_0"},
            {"from_node": "ramp", "from_pin": "out", "to_node": "comp", "to_pin": "in_1"},
        ],
    }


@dataclass
class Totals:
    tunes_acknowledged: int = 0
    tunes_sent: int = 0
    tune_errors: int = 0  # refusals, and ConnectionLost while a connection is cut
    reconnects: int = 0
    events: int = 0
    sync_round_trips_ms: list[float] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    stats_at: float = 0.0  # trio time the latest stats arrived


def _process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants: the control process and its engines (and their helper processes)."""
    tree, index = [pid], 0
    while index < len(tree):
        for task in Path(f"/proc/{tree[index]}/task").iterdir():
            try:
                tree += [int(child) for child in (task / "children").read_text().split()]
            except OSError:
                continue  # the task ended meanwhile
        index += 1
    return tree


def _proc_rss_mb(pid: int) -> float:
    """The resident memory of the daemon's whole process tree (each engine is a process of its own)."""
    total_kb = 0
    for member in _process_tree(pid):
        try:
            lines = Path(f"/proc/{member}/status").read_text().splitlines()
        except OSError:
            continue
        total_kb += next((int(line.split()[1]) for line in lines if line.startswith("VmRSS:")), 0)
    return total_kb / 1024


def _proc_fds(pid: int) -> int:
    """Open file descriptors over the daemon's process tree."""
    count = 0
    for member in _process_tree(pid):
        try:
            count += len(os.listdir(f"/proc/{member}/fd"))
        except OSError:
            continue
    return count


def _p99(values: Sequence[float]) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def _client(url: str, index: int, totals: Totals, stop: trio.Event, rng: random.Random) -> None:
    from compositord.client import ClientError, open_client

    async with open_client(url, reconnect_delay=0.05) as client:
        await client.get_pipeline(SESSION)
        async with trio.open_nursery() as nursery:

            async def read_events() -> None:
                async for event in client.events():
                    totals.events += 1
                    if event.name == "nodestatsupdated" and event.node_id == "comp":
                        totals.stats = dict(event.payload.get("stats", {}))
                        totals.stats_at = trio.current_time()

            nursery.start_soon(read_events)
            step = 0
            while not stop.is_set():
                step += 1
                await trio.sleep(0.05 + rng.random() * 0.1)
                if index % 2:
                    patch: dict[str, Any] = {"layers": {f"in_{index % 4}": {"opacity": round(rng.random(), 3)}}}
                else:
                    patch = {"text_overlays": [{"id": "title", "text": f"soak {index}:{step}", "font_size": 24}]}
                sync = step % 3 == 0
                started = time.perf_counter()
                totals.tunes_sent += 1
                try:
                    await client.tune(SESSION, "comp", patch, sync=sync)
                except ClientError:
                    totals.tune_errors += 1
                    continue
                if sync:
                    totals.sync_round_trips_ms.append((time.perf_counter() - started) * 1000)
                totals.tunes_acknowledged += 1
            nursery.cancel_scope.cancel()


async def _dropper(url_proxy: Any, totals: Totals, stop: trio.Event) -> None:
    while not stop.is_set():
        with trio.move_on_after(10):
            await stop.wait()
        if not stop.is_set():
            url_proxy.drop_one()
            totals.reconnects += 1


async def soak(minutes: float, interval: float, clients: int, out: Any) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="compositord-soak-") as tmp:
        config = Path(tmp) / f"{SESSION}.yaml"
        config.write_text(yaml.safe_dump(soak_pipeline()))
        # `compositord run` logs into files (testing.daemon_process), so a long soak never fills an undrained pipe.
        async with daemon_process(config, Path(tmp) / "state", Path(tmp)) as daemon:
            process = daemon.process
            await daemon.read_url()
            port = daemon.port
            totals = Totals()
            samples: list[dict[str, Any]] = []
            stop = trio.Event()
            print(
                "   min   rss_MB  fds    fps  render_p50  render_p99  late  dropped  tunes_acked  sync_p99_ms  reconnects",
                file=out,
                flush=True,
            )
            started = trio.current_time()
            async with trio.open_nursery() as nursery:
                proxy = DroppingProxy(port)
                await nursery.start(proxy.run)
                proxied = f"ws://127.0.0.1:{proxy.port}/api/v1/control"
                for index in range(clients):
                    nursery.start_soon(_client, proxied, index, totals, stop, random.Random(index))
                nursery.start_soon(_dropper, proxy, totals, stop)
                deadline = started + minutes * 60
                previous_frames, previous_time = None, trio.current_time()
                while trio.current_time() < deadline:
                    await trio.sleep(min(interval, max(0.0, deadline - trio.current_time())))
                    stats = totals.stats
                    # The stats' "fps" is the configured pace: the rate achieved comes from frames_rendered.
                    frames, now = stats.get("frames_rendered"), totals.stats_at
                    achieved = None
                    if frames is not None and previous_frames is not None and now > previous_time:
                        achieved = round((frames - previous_frames) / (now - previous_time), 1)
                    if frames is not None:
                        previous_frames, previous_time = frames, now
                    sample = {
                        "minutes": round((trio.current_time() - started) / 60, 2),
                        "rss_mb": round(_proc_rss_mb(process.pid), 1),
                        "fds": _proc_fds(process.pid),
                        "fps": achieved,
                        "render_ms_p50": stats.get("render_ms_p50"),
                        "render_ms_p99": stats.get("render_ms_p99"),
                        "frames_late": stats.get("frames_late"),
                        "frames_dropped": stats.get("frames_dropped"),
                        "tunes_acknowledged": totals.tunes_acknowledged,
                        "sync_p99_ms": round(_p99(totals.sync_round_trips_ms), 1),
                        "reconnects": totals.reconnects,
                    }
                    totals.sync_round_trips_ms.clear()
                    samples.append(sample)
                    print(
                        f"{sample['minutes']:6.2f} {sample['rss_mb']:8.1f} {sample['fds']:4d} {_fmt(sample['fps'])} {_fmt(sample['render_ms_p50'], 11)} "
                        f"{_fmt(sample['render_ms_p99'], 11)} {_fmt(sample['frames_late'], 5)} {_fmt(sample['frames_dropped'], 8)} "
                        f"{sample['tunes_acknowledged']:12d} {sample['sync_p99_ms']:12.1f} {sample['reconnects']:11d}",
                        file=out,
                        flush=True,
                    )
                stop.set()
                await trio.sleep(0.5)  # a grace for the tunes in flight
                nursery.cancel_scope.cancel()
            process.send_signal(signal.SIGTERM)
            status = await daemon.wait_exit(15)
    first, last = samples[0], samples[-1]
    summary = {
        "minutes": minutes,
        "clients": clients,
        "fps_configured": FPS,
        "rss_mb_first": first["rss_mb"],
        "rss_mb_last": last["rss_mb"],
        "rss_mb_max": max(s["rss_mb"] for s in samples),
        "fds_first": first["fds"],
        "fds_last": last["fds"],
        "fds_max": max(s["fds"] for s in samples),
        "fps_achieved_min": min((s["fps"] for s in samples if s["fps"] is not None), default=None),
        "render_ms_p99_max": max((s["render_ms_p99"] for s in samples if s["render_ms_p99"] is not None), default=None),
        "tunes_acknowledged": totals.tunes_acknowledged,
        "tune_errors": totals.tune_errors,
        "reconnects": totals.reconnects,
        "exit_status": status,
        "samples": samples,
    }
    return summary


def _fmt(value: Any, width: int = 6) -> str:
    if value is None:
        return "-".rjust(width)
    return f"{value:{width}.1f}" if isinstance(value, float) else f"{value:{width}d}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="compositord bench soak", description="N minutes at 30 fps with 20 clients: RSS, fds and frame times over time"
    )
    parser.add_argument("--minutes", type=float, default=30.0, help="how long (default 30)")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between samples (default 30)")
    parser.add_argument("--clients", type=int, default=CLIENTS, help=f"clients (default {CLIENTS})")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.interval <= 0 or args.clients < 1:
        print("compositord bench soak: --minutes and --interval must be positive, --clients at least 1", file=sys.stderr)
        return 2
    summary = trio.run(soak, args.minutes, args.interval, args.clients, sys.stdout)
    print("SOAK " + json.dumps({k: v for k, v in summary.items() if k != "samples"}), flush=True)
    return 0 if summary["exit_status"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
