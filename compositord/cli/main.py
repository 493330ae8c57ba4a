"""The `compositord` command: one entry point, a subcommand per use.

Each subcommand lives in the package that owns it and is imported only when
it runs, so `compositord ctl` never loads GL and `compositord render` never
loads the server.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

# name -> (module, help); the module provides `add_arguments(parser)` and `main(args) -> int`.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("compositord.cli.run", "run the daemon (the embedded demo pipeline when no --config is given)"),
    "render": ("compositord.cli.render", "render one frame of a pipeline file's compositor to PNG"),
    "check-config": ("compositord.cli.check_config", "validate a pipeline file (TOML or YAML): every error with its path"),
    "ctl": ("compositord.cli.ctl", "talk to a running daemon: get a pipeline, tune a node, watch events as JSON lines"),
    "bench": (
        "compositord.cli.bench",
        "headless benchmarks (compositor_pipeline, compositor_only, control_latency, scaling; --compare with FFmpeg/GStreamer)",
    ),
}


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="compositord", description="Live video compositor daemon.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = __import__(module_name, fromlist=["add_arguments"])
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command_parser)
        command_parser.set_defaults(_entry=module.main)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    entry: Callable[[argparse.Namespace], int] = args._entry
    return entry(args)


if __name__ == "__main__":
    sys.exit(main())
