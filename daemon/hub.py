"""Fan-out of events to every connection's mailbox, each event encoded once, paced per output frame.

Every connection sees every session (PROTOCOL.md section 4: nothing is
suppressed on the server; clients decide), so the hub is a set of subscribers.
A subscriber whose mailbox overflows is told to close (1008) and removed; the
others are not slowed down by it.

Frame pacing (PROTOCOL.md section 4: "at most one event per node and channel
per output frame, the latest"; ARCHITECTURE.md). A coalescable event (one
published with a ``coalesce_key`` whose first item is its session id:
``nodeparamschanged``, ``nodeviewdataupdated``, ``nodestatsupdated``,
``nodestatechanged``) carries the whole state of its node and channel plus the
whole acks map, so the hub holds it and a newer event of the same key
replaces it. The events of one key (node and channel) go to the mailboxes at
most once per frame period of their session's render loop (``frame_period``):
the first after a quiet period leaves at once, the next one at the end of the
period. Keys are paced apart: a ``nodeparamschanged`` that just left does not
hold back the view data of the frame that applies it.
Without pacing every applied tune was fanned out to every connection: at 100
clients and 600 tunes/s, 60,000 WebSocket sends a second, which a 2-core
machine cannot make; paced, it is at most fps x nodes x clients.

Order: an event published without a key (``nodeadded``, ``noderemoved``,
``sessiondestroyed``...) first flushes everything held, so nothing published
before it arrives after it, and a held event is only ever replaced by a newer
one of the same key (never a stale one after a newer one). Such a flush also
restarts the keys' periods, so it can put a second event of a key in one
frame period; structural changes are rare. Responses do not pass through the
hub (``Connection.send``): they are never held or coalesced.

Pacing is on only while :meth:`Hub.run` runs (the daemon runs it); without it
every event is fanned out at once, as before.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from typing import Protocol

import trio

from compositord.daemon.mailbox import Mailbox, MailboxFull
from compositord.daemon.outgoing import Broadcast

# Forget a key's last flush time this long after it (a frame period is at most 1 s: IDLE_FPS is 1).
_FORGET_LAST_FLUSH_S = 2.0

# The frame period in seconds of a session's output (None: do not pace it, fan out at once).
FramePeriod = Callable[[Hashable], "float | None"]


class Subscriber(Protocol):
    mailbox: Mailbox

    def close_for_policy(self, reason: str) -> None:
        """Close the connection with 1008 soon; must not block."""


class Hub:
    def __init__(self) -> None:
        self._subscribers: set[Subscriber] = set()
        self.published = 0
        self.held_replaced = 0  # events replaced in the hub by a newer one before a flush (statistics)
        self.flushes = 0
        self._frame_period: FramePeriod | None = None
        self._held: dict[Hashable, str] = {}  # coalesce key -> encoded event waiting for its key's next flush
        self._due: dict[Hashable, float] = {}  # coalesce key -> trio time its held event goes out
        self._last_flush: dict[Hashable, float] = {}  # coalesce key -> trio time its last event went out
        self._wakeup = trio.Event()

    def __len__(self) -> int:
        return len(self._subscribers)

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.add(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)

    def subscribers(self) -> list[Subscriber]:
        return list(self._subscribers)

    def held(self) -> int:
        """How many events wait for their key's next flush."""
        return len(self._held)

    def publish(self, text: str, coalesce_key: Hashable | None = None) -> None:
        """Queue an already encoded event for every subscriber (the same string for all).

        ``coalesce_key`` (for example ``(session_id, node_id, "view")``) marks a
        whole-state event that may replace an unsent one with the same key; while
        :meth:`run` runs it is held until its key's next frame flush.
        """
        self.published += 1
        if coalesce_key is not None and self._frame_period is not None:
            session = coalesce_key[0] if isinstance(coalesce_key, tuple) and coalesce_key else coalesce_key
            period = self._frame_period(session)
            if period is not None and period > 0:
                self._hold(coalesce_key, text, period)
                return
        self.flush()  # nothing published before this event may arrive after it
        self._fan_out(text, coalesce_key)

    def flush(self) -> None:
        """Fan out every held event now."""
        if not self._held:
            return
        now = trio.current_time()
        for key in list(self._held):
            self._flush_key(key, now)

    async def run(self, frame_period: FramePeriod) -> None:
        """Pace coalescable events by ``frame_period(session_id)`` until cancelled (then flush what is held)."""
        if self._frame_period is not None:
            raise RuntimeError("Hub.run is already running")
        self._frame_period = frame_period
        try:
            while True:
                self._wakeup = trio.Event()  # made before looking, so no wake-up between is lost
                now = trio.current_time()
                if not self._due:
                    self._last_flush = {k: t for k, t in self._last_flush.items() if now - t < _FORGET_LAST_FLUSH_S}
                    await self._wakeup.wait()
                    continue
                key, due = min(self._due.items(), key=lambda item: item[1])  # few keys: nodes x channels held
                if due > now:
                    with trio.move_on_at(due):
                        await self._wakeup.wait()  # an earlier due time may arrive meanwhile
                    continue
                self._flush_key(key, now)
        finally:
            self._frame_period = None
            if self._held:
                with trio.CancelScope(shield=True):
                    self.flush()

    # ------------------------------------------------------------------ internals

    def _hold(self, key: Hashable, text: str, period: float) -> None:
        if key in self._held:
            self.held_replaced += 1
        self._held[key] = text
        if key in self._due:
            return
        now = trio.current_time()
        due = self._last_flush.get(key, -math.inf) + period
        if due <= now:
            self._flush_key(key, now)  # the first event after a quiet period is not delayed
        else:
            self._due[key] = due
            self._wakeup.set()

    def _flush_key(self, key: Hashable, now: float) -> None:
        self._due.pop(key, None)
        text = self._held.pop(key, None)
        self._last_flush[key] = now
        if text is None:
            return
        self.flushes += 1
        self._fan_out(text, key)

    def _fan_out(self, text: str, coalesce_key: Hashable | None) -> None:
        message = Broadcast(text)  # framed once, by the first connection that sends it
        for subscriber in list(self._subscribers):
            try:
                if coalesce_key is None:
                    subscriber.mailbox.put(message)
                else:
                    subscriber.mailbox.put_coalescing(coalesce_key, message)
            except MailboxFull as exc:
                self._subscribers.discard(subscriber)
                subscriber.close_for_policy(f"too slow: {exc}")
