"""``compositord bench SCENARIO``: the headless benchmarks (perf/README.md).

Each scenario prints its summary (the reference pull request's form where it
measures throughput) and, last, one line ``BENCH {json}``. ``--compare`` runs
the same workload in FFmpeg and GStreamer when they are installed, interleaved
with ours (A B A B), and prints our fps over theirs per repetition.
``all --write-readme perf/README.md`` runs everything and rewrites the results
block of that file (between its ``results:begin`` / ``results:end`` markers).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from compositord.perf.options import BenchOptions

SCENARIOS = ("compositor_pipeline", "compositor_only", "control_latency", "scaling", "sessions")


def _runner(name: str) -> Callable[[BenchOptions], dict[str, Any]]:
    # Imported when chosen: each scenario pulls in what only it needs (GL, PyAV, a daemon).
    if name == "compositor_pipeline":
        from compositord.perf import scenario_pipeline

        return scenario_pipeline.run
    if name == "compositor_pipeline_aac":
        from compositord.perf import scenario_pipeline

        return scenario_pipeline.run_aac
    if name == "compositor_only":
        from compositord.perf import scenario_compositor_only

        return scenario_compositor_only.run
    if name == "control_latency":
        from compositord.perf import scenario_latency

        return scenario_latency.run
    if name == "sessions":
        from compositord.perf import scenario_sessions

        return scenario_sessions.run
    if name == "panel_preview":
        from compositord.perf import scenario_panel_preview

        return scenario_panel_preview.run
    if name == "mixer":
        from compositord.perf import scenario_mixer

        return scenario_mixer.run
    if name == "ingest":
        from compositord.perf import scenario_ingest

        return scenario_ingest.run
    from compositord.perf import scenario_scaling

    return scenario_scaling.run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "scenario",
        choices=(*SCENARIOS, "all", "soak", "panel_preview", "mixer", "ingest", "compositor_pipeline_aac"),
        help="what to measure (all: the five scenarios in turn; soak: perf/soak.py, long-running, not part of all; "
        "panel_preview: the web panel's preview in headless Chromium, not part of all; "
        "mixer: a compositor's sound mixing with 8 inputs, per frame, not part of all; "
        "ingest: CPU per frame of a file, a network stream and a screen capture input, not part of all; "
        "compositor_pipeline_aac: compositor_pipeline with an AAC track, not part of all)",
    )
    parser.add_argument(
        "--compare", action="store_true", help="also run the workload in FFmpeg / GStreamer (when installed), interleaved"
    )
    parser.add_argument("--quick", action="store_true", help="tiny runs (a smoke test, not a measurement)")
    parser.add_argument("--frames", type=int, default=None, help="frames per iteration (default: the scenario's)")
    parser.add_argument("--iterations", type=int, default=None, help="iterations (default: the scenario's)")
    parser.add_argument(
        "--lp-threads", type=int, default=None, help="LP_NUM_THREADS for Mesa llvmpipe (set before the GL context exists)"
    )
    parser.add_argument(
        "--profile", action="store_true", help="print a per-frame breakdown (cProfile; pyinstrument's tree when installed)"
    )
    parser.add_argument(
        "--no-startup-correction", action="store_true", help="do not subtract a peer's measured process start-up time"
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="control_latency: seconds of edits per configuration (default 8, --quick 1); panel_preview: seconds per phase; "
        "mixer: seconds in a render loop (default 5); ingest: seconds measured per input",
    )
    parser.add_argument(
        "--observers",
        choices=("raw", "client"),
        default="raw",
        help="control_latency: watching clients parse every event (raw, default) or also run the client library's causal masking (client)",
    )
    parser.add_argument(
        "--editors",
        choices=("raw", "client"),
        default="raw",
        help="control_latency: editing clients run the client library's stamps and masking in a process of their own over "
        "picows (raw, default) or are the trio client library in the bench's process (client)",
    )
    parser.add_argument(
        "--watchers-nice",
        type=int,
        default=0,
        metavar="N",
        help="control_latency: run the watching clients' process N nice steps down (they stand in for other machines)",
    )
    parser.add_argument(
        "--daemon-session",
        choices=("own", "shared"),
        default="own",
        help="control_latency: start the daemon in a session of its own, as systemd or a terminal does (own, default), "
        "or in the bench's, sharing the scheduler's group with its clients (shared)",
    )
    parser.add_argument(
        "--engine-mode",
        choices=("process", "thread", "both"),
        default="process",
        help="control_latency: the daemon's engine mode; both: each configuration in both modes, interleaved",
    )
    parser.add_argument(
        "--jitter",
        action="store_true",
        help="control_latency: send each edit at a random point of its period (compares runs without the luck of one phase)",
    )
    parser.add_argument(
        "--tune-log",
        default=None,
        metavar="FILE",
        help="control_latency: append each tune's send and ack times to FILE (JSON lines), to see when a tail happened",
    )
    parser.add_argument(
        "--configs",
        default=None,
        metavar="CxE,...",
        help="control_latency: the (clients x editing) configurations to run, e.g. 10x10,100x10 (default: all four)",
    )
    parser.add_argument(
        "--sessions",
        default="1,2,4,8",
        metavar="N,N,...",
        help="sessions: the session counts to run (default 1,2,4,8)",
    )
    parser.add_argument("--minutes", type=float, default=None, help="soak: how long (perf/soak.py's default when absent)")
    parser.add_argument("--interval", type=float, default=None, help="soak: seconds between samples")
    parser.add_argument("--clients", type=int, default=None, help="soak: clients")
    parser.add_argument(
        "--write-readme", type=Path, default=None, metavar="FILE", help="rewrite FILE's results block with this run's figures"
    )


def main(args: argparse.Namespace) -> int:
    if args.scenario == "soak":
        from compositord.perf import soak

        argv = [
            f"--{name}={value}"
            for name, value in (("minutes", args.minutes), ("interval", args.interval), ("clients", args.clients))
            if value is not None
        ]
        return soak.main(argv)
    if args.frames is not None and args.frames < 1:
        print("compositord bench: --frames must be at least 1", file=sys.stderr)
        return 2
    if args.iterations is not None and args.iterations < 1:
        print("compositord bench: --iterations must be at least 1", file=sys.stderr)
        return 2
    if args.seconds is not None and args.seconds <= 0:
        print("compositord bench: --seconds must be positive", file=sys.stderr)
        return 2
    if args.write_readme is not None and not args.write_readme.is_file():
        print(
            f"compositord bench: --write-readme {args.write_readme}: no such file (it must have the results markers)",
            file=sys.stderr,
        )
        return 2
    try:
        sessions = tuple(int(count) for count in args.sessions.split(","))
    except ValueError:
        sessions = ()
    if not sessions or min(sessions) < 1:
        print(f"compositord bench: --sessions {args.sessions!r}: a comma-separated list of positive counts", file=sys.stderr)
        return 2
    try:
        latency_configs = tuple(
            (int(clients), int(editing))
            for clients, editing in (item.split("x") for item in (args.configs.split(",") if args.configs else []))
        )
    except ValueError:
        latency_configs = ((0, 0),)
    if any(clients < 1 or not 1 <= editing <= clients for clients, editing in latency_configs):
        print(f"compositord bench: --configs {args.configs!r}: CLIENTSxEDITING pairs, 1 <= editing <= clients", file=sys.stderr)
        return 2
    from compositord.perf.harness import set_llvmpipe_threads

    set_llvmpipe_threads(args.lp_threads)
    options = BenchOptions(
        frames=args.frames,
        iterations=args.iterations,
        compare=args.compare,
        quick=args.quick,
        startup_correction=not args.no_startup_correction,
        profile=args.profile,
        seconds=args.seconds,
        observers=args.observers,
        editors=args.editors,
        watchers_nice=args.watchers_nice,
        daemon_session=args.daemon_session,
        engine_mode=args.engine_mode,
        sessions=sessions,
        latency_configs=latency_configs,
        jitter=args.jitter,
        tune_log=args.tune_log,
    )
    from compositord.perf.measure import json_line

    names = SCENARIOS if args.scenario == "all" else (args.scenario,)
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        result = _runner(name)(options)
        results[name] = result
        options.say(json_line(name, result))
    if args.write_readme is not None:
        from compositord.perf.readme import environment, rewrite

        command = (
            " ".join(["compositord", "bench", *sys.argv[2:]])
            if sys.argv[1:2] == ["bench"]
            else "compositord bench all --compare --profile --write-readme perf/README.md"
        )
        rewrite(args.write_readme, results, environment(args.lp_threads), command)
        options.say(f"wrote the results block of {args.write_readme}")
    return 0


def load_results(text: str) -> dict[str, dict[str, Any]]:
    """The ``BENCH`` lines of a run's output, by scenario (for scripts reading the output)."""
    found = {}
    for line in text.splitlines():
        if line.startswith("BENCH "):
            record = json.loads(line[len("BENCH ") :])
            found[record["scenario"]] = record
    return found
