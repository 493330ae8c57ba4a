"""A sink stops before the disk it writes to fills up.

A recording fills a disk at the encoder's bitrate, a Y4M file at 40 MB/s; the
store (SQLite) may live on the same file system, and when it cannot commit,
changes are refused. So a file-writing sink checks free space where it
writes and stops with a node error while there is still ``floor`` bytes left
(``min_free_disk_bytes``, docs/OPERATIONS.md). The check (``statvfs``, a
system call) runs on the sink's own thread, never the render thread: when
the sink opens its output, then at most once a second or every
:data:`CHECK_EVERY_BYTES` written, whichever comes first. Between two checks
a sink writes at most one second of output or that many bytes, which is how
far under the floor free space can get.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from compositord.daemon.engine.sinks.base import SinkError
from compositord.protocol.budget import format_bytes

CHECK_INTERVAL_S = 1.0
CHECK_EVERY_BYTES = 4 * 1024 * 1024


class DiskFloor:
    """Free space of the file system that holds ``where`` (a path or an open file descriptor), kept above ``floor``."""

    def __init__(
        self,
        where: int | str | os.PathLike[str],
        floor: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        statvfs: Callable[[int | str | os.PathLike[str]], os.statvfs_result] = os.statvfs,
    ) -> None:
        self._where = where
        self.floor = floor
        self._clock = clock
        self._statvfs = statvfs
        self._written_since = 0
        self._checked_at: float | None = None
        self.checks = 0

    def free_bytes(self) -> int:
        status = self._statvfs(self._where)
        return status.f_bavail * status.f_frsize

    def check_now(self) -> None:
        """SinkError when free space is under the floor (a floor of 0 never stops anything)."""
        self._checked_at = self._clock()
        self._written_since = 0
        if self.floor <= 0:
            return
        self.checks += 1
        free = self.free_bytes()
        if free < self.floor:
            raise SinkError(
                f"stopped with {format_bytes(free)} free on the disk it writes to, under the floor of"
                f" {format_bytes(self.floor)} (min_free_disk_bytes); free some space, then send the node's params again"
            )

    def wrote(self, count: int) -> None:
        """Count ``count`` bytes written; check when a second has passed or enough was written since the last check."""
        self._written_since += count
        if (
            self._checked_at is None
            or self._written_since >= CHECK_EVERY_BYTES
            or self._clock() - self._checked_at >= CHECK_INTERVAL_S
        ):
            self.check_now()
