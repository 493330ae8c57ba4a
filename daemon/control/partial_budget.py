"""One budget for the bytes of messages still arriving, across every connection.

A WebSocket message is held until its last fragment arrives; each connection
may hold one of up to ``max_binary_bytes`` (32 MiB). Without a total, 256
connections that each send 30 MB of a message and stop could make the
daemon hold 8 GiB. So every connection charges what it holds of an
unfinished message to this budget as it arrives (``websocket.ServerWebSocket``);
a fragment that would pass the total closes its connection with 1009, and a
connection gives back what it held when its message ends or it closes.

Given back to the system too: a message arrives in pieces of at most 64 KiB,
which glibc's malloc serves from its heap, and freeing them there does not
return the pages (measured: 16 connections that held 30 MB each and closed
left the daemon 256 MiB larger for good). So when a connection that held at
least :data:`TRIM_AFTER_BYTES` closes, glibc is asked to return its free pages
(``malloc_trim``, from :meth:`PartialMessageBudget.run`, the server's task),
at most once every :data:`TRIM_INTERVAL_S` (then once more for what closed
meanwhile) so that connections opened and closed in a loop cannot make the
daemon do it all the time. Elsewhere than glibc nothing is asked.

Trio thread only: no lock.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

import trio

TRIM_AFTER_BYTES = 1 << 20
TRIM_INTERVAL_S = 1.0


def _glibc_trim() -> Callable[[], object] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None  # not glibc
    return lambda: trim(0)


class PartialMessageBudget:
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the partial message budget must be at least 1 byte")
        self.limit = limit
        self.held = 0  # bytes of unfinished messages held now, all connections together
        self.refused = 0  # connections closed for passing it (statistics)
        self.trims = 0  # times the freed memory was handed back to the system (statistics)
        self._trim = _glibc_trim()
        self._trim_wanted = trio.Event()

    @property
    def gives_memory_back(self) -> bool:
        """Whether freed memory is handed back to the system (glibc's ``malloc_trim`` was found)."""
        return self._trim is not None

    def take(self, count: int) -> bool:
        """Charge ``count`` bytes; False (nothing charged) when the total would pass the limit."""
        if self.held + count > self.limit:
            self.refused += 1
            return False
        self.held += count
        return True

    def give_back(self, count: int, *, closing: bool = False) -> None:
        """``count`` bytes are no longer held; ``closing``: their connection ended, and they are freed now."""
        self.held -= count
        if self.held < 0:
            raise AssertionError(f"partial message budget gave back more than was taken ({self.held})")
        if closing and count >= TRIM_AFTER_BYTES and self._trim is not None:
            self._trim_wanted.set()

    async def run(self) -> None:
        """Hand freed memory back to the system when a connection that held much of it closed (until cancelled)."""
        if self._trim is None:
            return
        while True:
            await self._trim_wanted.wait()
            self._trim_wanted = trio.Event()
            self.trims += 1
            self._trim()
            await trio.sleep(TRIM_INTERVAL_S)
