"""A small tmpfs for tests of a full disk (needs root and mount(2); callers skip, naming that, without it)."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path


class CannotMount(Exception):
    """mount(2) is not allowed here (not root, or no CAP_SYS_ADMIN in this container)."""


@contextlib.contextmanager
def small_tmpfs(mountpoint: Path, size: str) -> Iterator[Path]:
    """``mountpoint`` (made if needed) with a fresh tmpfs of ``size`` (``64k``, ``4m``) mounted on it."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mountpoint)], capture_output=True)
    if result.returncode != 0:
        raise CannotMount(f"cannot mount a {size} tmpfs (needs root): {result.stderr.decode(errors='replace').strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def fill(directory: Path, name: str = "filler") -> Path:
    """Take every free byte of ``directory``'s file system with one file; returns it (delete it to free the space)."""
    path = directory / name
    with open(path, "ab", buffering=0) as filler:
        for chunk in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
            try:
                while True:
                    filler.write(b"\0" * chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    assert os.statvfs(directory).f_bavail == 0
    return path
