"""`compositord run`: start the daemon and serve until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import logging
import sys

import trio


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="pipeline file (TOML or YAML); default: the embedded demo pipeline")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=4545, help="port to bind (default: 4545; 0 picks a free one)")
    parser.add_argument("--state-dir", metavar="DIR", help="state directory (default: $STATE_DIRECTORY or ./state)")
    parser.add_argument("--asset-dir", metavar="DIR", help="images and fonts for overlays (default: STATE_DIR/assets)")
    parser.add_argument(
        "--output-dir",
        metavar="DIR",
        help="where sink::file and sink::y4m write; their paths are relative to it (default: STATE_DIR/outputs)",
    )
    parser.add_argument(
        "--allow-origin",
        metavar="ORIGIN",
        action="append",
        help="a browser Origin allowed to connect (repeatable; default: $COMPOSITORD_ALLOWED_ORIGINS, else none)",
    )
    engines = parser.add_argument_group('engines (docs/OPERATIONS.md, "Engines")')
    engines.add_argument(
        "--engine-mode",
        choices=["process", "thread"],
        help="process: each session's engine in a supervised process (default; $COMPOSITORD_ENGINE_MODE); "
        "thread: inside the daemon's process",
    )
    engines.add_argument(
        "--engine-memory-mb", type=int, metavar="MB", help="an engine process over this is restarted (default 2048)"
    )
    engines.add_argument(
        "--engine-stall-frames",
        type=int,
        metavar="N",
        help="an engine without a frame end for N frame intervals is restarted (default 90)",
    )
    engines.add_argument(
        "--engine-park-after", type=int, metavar="N", help="park a session after N engine failures within the window (default 5)"
    )
    engines.add_argument("--engine-park-window", type=float, metavar="S", help="the window, in seconds (default 120)")
    engines.add_argument(
        "--allow-listen-host",
        metavar="HOST",
        action="append",
        help="a host a sink::stream listen URL may bind besides loopback (repeatable; 0.0.0.0 allows every interface)",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def main(args: argparse.Namespace) -> int:
    # Imported here so that `compositord --help` stays quick.
    from compositord.daemon.app import serve
    from compositord.daemon.config import ConfigError, Settings, SettingsError

    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        settings = Settings.from_args(args)
    except SettingsError as exc:
        print(f"compositord run: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # an engine setting out of range: say which, before anything starts
        print(f"compositord run: {exc}", file=sys.stderr)
        return 2
    if settings.pipeline_file is not None:
        from compositord.daemon.config import load_pipeline

        try:
            # Fail before anything starts, with every error, by the rules this daemon will apply.
            load_pipeline(settings.pipeline_file, context=settings.validation_context())
        except ConfigError as exc:
            for line in exc.lines():
                print(line, file=sys.stderr)
            return 1
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    from compositord.daemon.heap import freeze_startup_objects

    freeze_startup_objects()  # the imports are done and no session exists yet

    async def run() -> None:
        # serve() is awaited, not nursery.start()ed: a SIGTERM before the first frame ends it
        # without ever reporting started, which is a clean stop here, not start()'s RuntimeError.
        await serve(settings, task_status=_PrintAddress())

    from compositord.daemon.engine.api import EngineError
    from compositord.daemon.state.store import StoreError

    failed = False
    try:
        trio.run(run)
    except* (EngineError, StoreError, OSError) as group:
        # Expected ways to fail at start (no GL, an unusable state directory, the port taken): one line each.
        for error in _leaves(group):
            print(f"compositord run: {error}", file=sys.stderr)
        failed = True
    return 1 if failed else 0


class _PrintAddress:
    """The task status serve() reports its bound address to: the one line a supervisor waits for."""

    def started(self, value: tuple[str, int] | None = None) -> None:
        assert value is not None
        host, port = value
        shown_host = f"[{host}]" if ":" in host else host
        # stderr: stdout may carry a sink::y4m with path "-" (raw video for a pipe).
        print(f"compositord: serving ws://{shown_host}:{port}/api/v1/control", file=sys.stderr, flush=True)
        print(f"panel: http://{shown_host}:{port}/", file=sys.stderr, flush=True)


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    found: list[BaseException] = []
    for error in group.exceptions:
        found.extend(_leaves(error) if isinstance(error, BaseExceptionGroup) else [error])
    return found
