"""The `compositord` command line: every entry point in one place (`main` dispatches)."""

from compositord.cli.main import main

__all__ = ["main"]
