"""The bounded, coalescing outbox of one connection.

Every state event (``nodeparamschanged``, ``nodeviewdataupdated``,
``nodestatsupdated``) carries the whole state of its node and channel plus the
whole acks map (ARCHITECTURE.md, "Rules that keep it simple"), so an unsent
event may be replaced by a newer one of the same key without losing anything a
client needs. The replacement goes to the back of the queue: it must never
overtake an event queued before it (a ``noderemoved`` then ``nodeadded`` of the
same node, for example), and a stale event never follows a newer one because
the older one is gone.

Everything else (responses, ``nodeadded``, ``sessioncreated``...) keeps its
order and is never dropped. What is queued is bounded twice, in messages and
in bytes (a client that pipelines ``getpipeline`` of a large session without
reading would queue a few thousand messages of 150 KB each, half a gigabyte,
within the message bound): when a put would pass either bound the connection
reads too slowly to be served, and :class:`MailboxFull` tells the owner to
close it (1008); the client resyncs with ``getpipeline`` when it reconnects.
The byte bound counts what waits behind the oldest queued message (the one
the sender writes next): one message larger than the bound (a large
``pipeline``, the rest of a cut write) never closes a client that reads.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING

import trio

from compositord.daemon.control.outgoing import size_of

if TYPE_CHECKING:
    from compositord.daemon.control.outgoing import Outgoing

DEFAULT_CAPACITY = 4096
DEFAULT_MAX_BYTES = 8 * 1024 * 1024


class MailboxFull(Exception):
    """The connection fell too far behind; its owner closes it with 1008."""


class MailboxClosed(Exception):
    """``get`` on a mailbox that was closed and drained."""


class Mailbox:
    def __init__(self, capacity: int = DEFAULT_CAPACITY, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if capacity < 1 or max_bytes < 1:
            raise ValueError("capacity and max_bytes must be at least 1")
        self._capacity = capacity
        self._max_bytes = max_bytes
        self._bytes = 0  # of everything queued (text counted a byte a character, as outgoing.size_of does)
        # One ordered map for both kinds: coalescing entries are keyed by their
        # coalescing key, ordered ones by a unique counter value, so "replace and
        # move to the back" is a delete plus an insert.
        self._queue: OrderedDict[Hashable, Outgoing] = OrderedDict()
        self._counter = itertools.count()
        self._changed = trio.Event()
        self._closed = False
        self.coalesced = 0  # events replaced before they were sent (statistics)

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, text: Outgoing) -> None:
        """Queue a message that must be sent, in order (a response, a structural event)."""
        self._insert(("ordered", next(self._counter)), text, replacing=None)

    def put_coalescing(self, key: Hashable, text: Outgoing) -> None:
        """Queue a whole-state event; an unsent event with the same ``key`` is replaced."""
        slot = ("coalescing", key)
        replaced = self._queue.get(slot)
        self._insert(slot, text, replacing=replaced)

    def put_all(self, messages: Sequence[tuple[Hashable | None, Outgoing]]) -> None:
        """``put`` or ``put_coalescing`` each ``(coalesce key or None, message)``, in order."""
        for key, message in messages:
            if key is None:
                self.put(message)
            else:
                self.put_coalescing(key, message)

    def put_first(self, data: bytes) -> None:
        """The unsent rest of a write: it goes before everything queued, outside the bound (it was
        counted when its messages were queued or written)."""
        if self._closed:
            return
        slot = ("ordered", next(self._counter))
        self._queue[slot] = data
        self._queue.move_to_end(slot, last=False)
        self._bytes += len(data)
        self._changed.set()

    def _insert(self, slot: Hashable, text: Outgoing, *, replacing: Outgoing | None) -> None:
        """Queue ``text`` at ``slot`` (at the back); ``replacing``: the unsent message it replaces there."""
        if self._closed:
            return  # a closing connection sends nothing more; not an error for the producer
        if replacing is None and len(self._queue) >= self._capacity:
            raise MailboxFull(f"{len(self._queue)} messages waiting (bound {self._capacity})")
        size = size_of(text)
        freed = size_of(replacing) if replacing is not None else 0
        entries = iter(self._queue.values())
        first = next(entries, None)
        if first is not None and first is replacing:
            first = next(entries, None)
        if first is not None:
            behind = self._bytes - freed - size_of(first)
            if behind + size > self._max_bytes:
                raise MailboxFull(f"{behind} bytes waiting behind the next message, {size} more (bound {self._max_bytes} bytes)")
        if replacing is not None:
            del self._queue[slot]
            self.coalesced += 1
        self._queue[slot] = text
        self._bytes += size - freed
        self._changed.set()

    def get_nowait(self) -> Outgoing:
        if not self._queue:
            if self._closed:
                raise MailboxClosed
            raise trio.WouldBlock
        _, text = self._queue.popitem(last=False)
        self._bytes -= size_of(text)
        return text

    async def get(self) -> Outgoing:
        """The oldest queued message; waits while empty; :class:`MailboxClosed` once closed and empty."""
        while True:
            try:
                return self.get_nowait()
            except trio.WouldBlock:
                pass
            self._changed = trio.Event()
            await self._changed.wait()

    def close(self) -> None:
        """No more puts are accepted; ``get`` still drains what is queued, then raises :class:`MailboxClosed`."""
        self._closed = True
        self._changed.set()
