"""`compositord check-config FILE`: validate a pipeline file without starting anything."""

from __future__ import annotations

import argparse

from compositord.daemon.config import ConfigError, load_pipeline


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="pipeline file (.toml, .yaml or .yml)")


def main(args: argparse.Namespace) -> int:
    try:
        load_pipeline(args.file)
    except ConfigError as exc:
        for line in exc.lines():
            print(line)
        return 1
    print("ok")
    return 0
