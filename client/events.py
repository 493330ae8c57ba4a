"""Events as the client hands them to the application, and the bounded buffer they wait in."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import trio

from compositord.protocol.envelope import Event

RESYNCED = "resynced"
"""Name of the client-made event that follows a reconnect's resync of one session (``getpipeline``)."""


@dataclass(frozen=True)
class ClientEvent:
    """One event from the server (or ``resynced`` from the client itself), with masking applied.

    ``shown`` is the node's state on ``channel`` as this client should show it
    (server state with its own pending values laid over it) for
    ``nodeparamschanged`` (channel ``params``) and ``nodeviewdataupdated``
    (channel ``view``); None for other events.
    """

    name: str
    payload: Mapping[str, Any]
    session_id: str | None = None
    node_id: str | None = None
    channel: str | None = None
    shown: Any = None
    raw: Event | None = None


class EventBuffer:
    """Bounded FIFO between the reader task and the application; full means drop the oldest and count it.

    The reader never waits for a slow application (responses behind events must
    still arrive). Dropping is safe for state events, which carry a node's whole
    state; :meth:`Client.shown` always has the latest.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._items: deque[ClientEvent] = deque(maxlen=capacity)
        self._changed = trio.Event()
        self._closed = False
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def put_nowait(self, item: ClientEvent) -> None:
        if self._closed:
            return
        if len(self._items) == self._items.maxlen:
            self.dropped += 1
        self._items.append(item)
        self._wake()

    def close(self) -> None:
        self._closed = True
        self._wake()

    async def get(self) -> ClientEvent:
        """The oldest event; :class:`trio.EndOfChannel` once closed and drained.

        A checkpoint even when an event is waiting, as trio's own channels do: a loop over a full buffer
        then still lets other tasks run, and a cancellation or Ctrl-C reach it, between two events. A
        cancellation is taken only before the event is taken out, so none is lost.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._items:
            item = self._items.popleft()
            await trio.lowlevel.cancel_shielded_checkpoint()
            return item
        while not self._items:
            if self._closed:
                raise trio.EndOfChannel
            await self._changed.wait()
        return self._items.popleft()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()


class EventStream:
    """``async for event in client.events()``: a cancel-safe async iterator over an :class:`EventBuffer`."""

    def __init__(self, buffer: EventBuffer) -> None:
        self._buffer = buffer

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> ClientEvent:
        try:
            return await self._buffer.get()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None
