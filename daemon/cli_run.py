"""`compositord run`: start the daemon."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="pipeline file (TOML or YAML); default: the embedded demo pipeline")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=4545, help="port to bind (default: 4545; 0 picks a free one)")
    parser.add_argument("--state-dir", metavar="DIR", help="state directory (default: $STATE_DIRECTORY or ./state)")


def main(args: argparse.Namespace) -> int:
    pipeline = args.config or "the embedded demo pipeline (colorbars, a picture-in-picture input, a text overlay)"
    print(
        f"compositord run: would serve {pipeline} on ws://{args.host}:{args.port}/api/v1/control,\n"
        "but the daemon is not built yet (issue 4: trio WebSocket server, store, render loop).",
        file=sys.stderr,
    )
    return 2
