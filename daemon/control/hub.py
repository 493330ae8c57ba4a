"""Fan-out of events to every connection's mailbox, each event encoded and framed once, paced per output frame.

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
replaces it. A session's held events leave together, at the end of each of its
output frames (:meth:`Hub.frame_ended`, called by the render loop after every
frame): the view data of a frame and the params changes that arrived during it
reach each connection in one write, which the client reads in one go, and
every client sees a change in the same frame as the picture that shows it.
Two exceptions keep it live: when nothing of the session left in the last
two frame periods (an idle session, a first edit), an event leaves at once; and
held events leave after two frame periods even if no frame ended (a stalled
or slow render loop does not hold the control plane back).
The price: while a session's frames emit view data (an edit in progress),
a params change waits for the end of the frame it arrived in (at most a
frame period plus the render time) before its ``nodeparamschanged`` leaves.
That is the frame in which it is on screen, so nobody sees it later
than the picture; an editing client masks its own edit meanwhile (rule C1).
Why the frame end and not a timer per key: a connection would then get params
and view data in two writes per frame at unrelated times, twice the wake-ups
and system calls of the daemon's busiest thread at 100 clients
(perf/README.md, control_latency).

Order: an event published without a key (``nodeadded``, ``noderemoved``,
``sessiondestroyed``...) first flushes everything held, so nothing published
before it arrives after it, and a held event is only ever replaced by a newer
one of the same key (never a stale one after a newer one). Responses do not
pass through the hub (``Connection.send``): they are never held or coalesced.

Pacing is on only while :meth:`Hub.run` runs (the daemon runs it); without it
every event is fanned out at once.

Whom first. A fan-out writes to every connection in turn, and on a busy
machine the clients woken by the first writes take the CPU from those written
last. A person dragging a slider waits for the ack of each edit (rule C1
masks it meanwhile, but the view follows only with the ack); a tally display
or a console that only watches waits for nobody. So the connections that
edited in the last ``EDITING_WINDOW_S`` (:meth:`Hub.edited_by`, told by the
tune path) are written first, then the rest. Only the order across
connections changes; each connection gets the same messages in the same
order. At (100 connected, 10 editing) on 2 cores this is the difference
between the editors' reads waiting behind 90 watchers' or not
(perf/README.md, control_latency).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from typing import Protocol

import trio

from compositord.daemon.control.mailbox import Mailbox, MailboxFull
from compositord.daemon.control.outgoing import Broadcast, Outgoing

# Forget a session's last flush time this long after it (a frame period is at most 1 s: IDLE_FPS is 1).
_FORGET_LAST_FLUSH_S = 2.0
# Held events leave after this many frame periods even when no frame ends (a stalled render loop).
_FALLBACK_PERIODS = 2.0
# A session from which nothing left for this many frame periods is quiet: its next event leaves at once.
# Not one period: frame ends reach this thread with jitter, and with one period every gap a little over
# it sends the next tune's params change on its own, one more write to every connection just before the
# frame's (at 100 clients under load, an eighth of the control process's time, making it later still).
_QUIET_PERIODS = 2.0
# A connection that edited within this many seconds is served first in a fan-out (a drag pauses for a
# moment and goes on; one that stopped editing a second ago is a watcher again).
EDITING_WINDOW_S = 1.0

# The frame period in seconds of a session's output (None: do not pace it, fan out at once).
FramePeriod = Callable[[Hashable], "float | None"]


class Subscriber(Protocol):
    mailbox: Mailbox

    def deliver(self, messages: Sequence[tuple[Hashable | None, Outgoing]]) -> None:
        """Send or queue ``(coalesce key or None, message)`` pairs in order; must not block;
        :class:`MailboxFull` when the subscriber's queue overflows."""

    def close_for_policy(self, reason: str) -> None:
        """Close the connection with 1008 soon; must not block."""


class Hub:
    def __init__(self) -> None:
        self._subscribers: set[Subscriber] = set()
        self._last_edit: dict[Subscriber, float] = {}  # subscriber -> trio time of its last edit
        self.published = 0
        self.held_replaced = 0  # events replaced in the hub by a newer one before a flush (statistics)
        self.flushes = 0  # session flushes (each fans out one or more held events)
        self._frame_period: FramePeriod | None = None
        self._held: dict[Hashable, dict[Hashable, Broadcast]] = {}  # session -> coalesce key -> event
        self._due: dict[Hashable, float] = {}  # session -> trio time its held events go out if no frame ends first
        self._last_flush: dict[Hashable, float] = {}  # session -> trio time of its last flush
        self._wakeup = trio.Event()

    def __len__(self) -> int:
        return len(self._subscribers)

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.add(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)
        self._last_edit.pop(subscriber, None)

    def edited_by(self, subscriber: Subscriber) -> None:
        """``subscriber`` sent an edit: it is served first in fan-outs for ``EDITING_WINDOW_S``."""
        if subscriber in self._subscribers:
            self._last_edit[subscriber] = trio.current_time()

    def editing(self) -> list[Subscriber]:
        """The subscribers that edited in the last ``EDITING_WINDOW_S``, in the order they started."""
        if not self._last_edit:
            return []
        since = trio.current_time() - EDITING_WINDOW_S
        editing = [subscriber for subscriber, at in self._last_edit.items() if at >= since]
        if len(editing) < len(self._last_edit):
            self._last_edit = {subscriber: self._last_edit[subscriber] for subscriber in editing}
        return editing

    def subscribers(self) -> list[Subscriber]:
        """Every subscriber, in the order a fan-out serves them: those editing first."""
        editing = self.editing()
        if not editing:
            return list(self._subscribers)
        first = set(editing)
        return editing + [subscriber for subscriber in self._subscribers if subscriber not in first]

    def held(self) -> int:
        """How many events wait for their session's next flush."""
        return sum(len(events) for events in self._held.values())

    def publish(self, message: str | Broadcast, coalesce_key: Hashable | None = None) -> None:
        """Queue an event for every subscriber (the same message for all: encoded text, or a
        ``Broadcast`` that encodes itself if it is sent).

        ``coalesce_key`` (for example ``(session_id, node_id, "view")``) marks a
        whole-state event that may replace an unsent one with the same key; while
        :meth:`run` runs it is held until its session's next flush.
        """
        self.published += 1
        if isinstance(message, str):
            message = Broadcast(message)
        if coalesce_key is not None and self._frame_period is not None:
            session = coalesce_key[0] if isinstance(coalesce_key, tuple) and coalesce_key else coalesce_key
            period = self._frame_period(session)
            if period is not None and period > 0:
                self._hold(session, coalesce_key, message, period)
                return
        self.flush()  # nothing published before this event may arrive after it
        self._fan_out([(coalesce_key, message)])

    def frame_ended(self, session: Hashable) -> None:
        """The render loop of ``session`` finished a frame: its held events go out now, together."""
        if session in self._held:
            self._flush_session(session, trio.current_time())

    def flush(self) -> None:
        """Fan out every held event now."""
        if not self._held:
            return
        now = trio.current_time()
        for session in list(self._held):
            self._flush_session(session, now)

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
                session, due = min(self._due.items(), key=lambda item: item[1])  # few sessions
                if due > now:
                    with trio.move_on_at(due):
                        await self._wakeup.wait()  # an earlier due time, or a flush, may come meanwhile
                    continue
                self._flush_session(session, now)
        finally:
            self._frame_period = None
            if self._held:
                with trio.CancelScope(shield=True):
                    self.flush()

    # ------------------------------------------------------------------ internals

    def _hold(self, session: Hashable, key: Hashable, message: Broadcast, period: float) -> None:
        events = self._held.setdefault(session, {})
        if key in events:
            self.held_replaced += 1
            del events[key]  # the newest goes last: events leave in the order they were last published
        events[key] = message
        now = trio.current_time()
        last = self._last_flush.get(session, -math.inf)
        if now - last >= _QUIET_PERIODS * period:
            self._flush_session(session, now)  # the first event after a quiet period is not delayed
        elif session not in self._due:
            self._due[session] = last + _FALLBACK_PERIODS * period
            self._wakeup.set()

    def _flush_session(self, session: Hashable, now: float) -> None:
        if self._due.pop(session, None) is not None:
            self._wakeup.set()
        events = self._held.pop(session, None)
        if not events:
            return
        self._last_flush[session] = now
        self.flushes += 1
        self._fan_out(list(events.items()))

    def _fan_out(self, messages: list[tuple[Hashable | None, Broadcast]]) -> None:
        for subscriber in self.subscribers():
            try:
                subscriber.deliver(messages)
            except MailboxFull as exc:
                self.unsubscribe(subscriber)
                subscriber.close_for_policy(f"too slow: {exc}")
