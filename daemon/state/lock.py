"""One daemon per state directory: an exclusive ``flock`` on a lock file, held while the store is open.

Two daemons on one state directory each keep their own mirror of the store
and overwrite each other's commits: an acknowledged tune was lost that way.
The lock is taken with ``LOCK_NB`` (it never waits) before the database is
opened; the holder writes its pid into the file so the second daemon can say
who has the directory. The kernel drops the lock when the holder's file
descriptor closes, also when the process is killed, so a crash never leaves
a stale lock behind (the pid in the file may be stale; the lock is not).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_FILE_NAME = "compositord.lock"


class StateDirectoryLocked(Exception):
    """Another process holds the state directory; the message names it and, when known, its pid."""

    def __init__(self, state_dir: Path, pid: int | None) -> None:
        self.state_dir = state_dir
        self.pid = pid
        holder = f"another compositord (pid {pid})" if pid is not None else "another compositord"
        super().__init__(
            f"the state directory {state_dir} is in use by {holder}: one daemon per state directory"
            " (stop the other one, or give this one its own --state-dir)"
        )


class StateDirectoryLock:
    """The exclusive lock of one state directory; ``release()`` (or closing the process) gives it back."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, state_dir: Path) -> StateDirectoryLock:
        """Take the lock now or raise :class:`StateDirectoryLocked` (never waits)."""
        state_dir = Path(state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        path = state_dir / LOCK_FILE_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise StateDirectoryLocked(state_dir, pid) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        return cls(path, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Give the lock back (idempotent). The pid stays in the file: harmless, the lock is what counts."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the only descriptor of the open file releases the flock


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
