"""What the session logic keeps of every running session, and what each of its concerns shares:
looking a session up, publishing an event, forgetting removed nodes."""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Callable, Hashable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from compositord.daemon.control.connection import Connection
from compositord.daemon.control.hub import Hub
from compositord.daemon.control.outgoing import Broadcast
from compositord.daemon.engine.api import Engine
from compositord.daemon.sessions.budgets import Budgets
from compositord.daemon.sessions.refusals import not_found
from compositord.daemon.state.model import SessionRecord
from compositord.daemon.state.store import Store
from compositord.protocol import envelope, streamkit
from compositord.protocol.causal import AckBook
from compositord.protocol.errors import ErrorCode, RemoteProtocolError
from compositord.protocol.params import DAEMON, ValidationContext


@asynccontextmanager
async def holding(lock: trio.Lock) -> AsyncIterator[None]:
    """``async with lock``, without its schedule point when the lock is free.

    trio's ``Lock.acquire`` yields once after taking a free lock, so a lock taken that way is held across
    a whole round of the scheduler (every connection's reads, the frame's fan-out): a session then takes
    one tune per round or two, and at 600 tunes a second under load the tunes queue for its lock for
    hundreds of milliseconds (perf/README.md, control_latency with engine processes). A tune's critical
    section waits for nothing (inline images to write and a full store queue aside), so a lock taken at
    once is free again before any other task runs.
    """
    try:
        lock.acquire_nowait()
    except trio.WouldBlock:
        await lock.acquire()
    try:
        yield
    finally:
        lock.release()


@dataclass
class CompositorWatch:
    """An ephemeral preview of a compositor's output (``subscribepreview`` of a compositor node) and the
    connections that watch it; one per node, width and rate, shared by every connection that asks for those."""

    node_id: str
    max_width: int
    max_fps: float
    subscribers: set[Connection] = field(default_factory=set)


@dataclass
class LiveSession:
    """What the service keeps per running session besides the store's records."""

    engine: Engine
    make_book: Callable[[], AckBook]  # rule S7's limits come with it
    # When this process opened the session (wall clock, and monotonic for ages): StreamKit's created_at and
    # its stats' duration_secs. The store keeps no creation time: after a restart it is the restart's.
    created_at: float = field(default_factory=time.time)
    started: float = field(default_factory=time.monotonic)
    # Covers read-compute-store-publish of one change (rule S1): two edits never interleave.
    lock: trio.Lock = field(default_factory=trio.Lock)
    acks: dict[str, AckBook] = field(default_factory=dict)  # params channel, per node
    last_view: dict[str, dict[str, Any]] = field(default_factory=dict)  # per node, without "_" keys
    last_view_acks: dict[str, dict[str, int]] = field(default_factory=dict)  # per node: the acks sent with last_view
    node_errors: dict[str, str] = field(default_factory=dict)  # nodes in the error state, with why
    node_conditions: dict[str, str] = field(default_factory=dict)  # live inputs: "connecting" or "live"
    preview_subscribers: dict[str, set[Connection]] = field(default_factory=dict)  # sink::preview node -> connections
    compositor_previews: dict[str, CompositorWatch] = field(default_factory=dict)  # by preview id

    def book(self, node_id: str) -> AckBook:
        found = self.acks.get(node_id)
        if found is None:
            found = self.acks[node_id] = self.make_book()
        return found

    def forget_nodes(self, node_ids: set[str]) -> None:
        """Drop what is kept of removed nodes (a node added again under the same id starts afresh)."""
        for node_id in node_ids:
            self.acks.pop(node_id, None)
            self.last_view.pop(node_id, None)
            self.last_view_acks.pop(node_id, None)
            self.node_errors.pop(node_id, None)
            self.node_conditions.pop(node_id, None)
            self.preview_subscribers.pop(node_id, None)
        # The engine stops the previews of compositors it no longer has.
        self.compositor_previews = {p: w for p, w in self.compositor_previews.items() if w.node_id not in node_ids}


class LiveSessions:
    """The running sessions (those with an engine), the store they live in, the hub their events go to, and
    what the operator allows in params (``context``: the stream allowlist, never standard output)."""

    def __init__(
        self,
        store: Store,
        hub: Hub,
        make_book: Callable[[], AckBook],
        budgets: Budgets,
        *,
        context: ValidationContext = DAEMON,
        image_data: streamkit.ImageData | None = None,
    ) -> None:
        self.store = store
        self.hub = hub
        self.budgets = budgets
        self.context = context
        self._make_book = make_book
        # The base64 of an inline image by asset path (inline_images.InlineImages.base64_of), for StreamKit clients.
        self.image_data = image_data
        self._sessions: dict[str, LiveSession] = {}
        self._parked: dict[str, str] = {}  # stored sessions not started, with why (over a budget at start)

    def add(self, session_id: str, engine: Engine) -> LiveSession:
        live = self._sessions[session_id] = LiveSession(engine, self._make_book)
        return live

    def remove(self, session_id: str) -> LiveSession | None:
        return self._sessions.pop(session_id, None)

    def restore(self, session_id: str, live: LiveSession) -> None:
        """Put back a session whose removal could not be stored (its engine still runs)."""
        self._sessions[session_id] = live

    def park(self, session_id: str, reason: str) -> None:
        """A stored session that is not started: ``lookup`` answers with ``reason``, ``listsessions`` lists it."""
        self._parked[session_id] = reason

    def unpark(self, session_id: str) -> None:
        self._parked.pop(session_id, None)

    def parked(self) -> Mapping[str, str]:
        return self._parked

    def remove_all(self) -> list[LiveSession]:
        removed = list(self._sessions.values())
        self._sessions.clear()
        return removed

    def get(self, session_id: Any) -> LiveSession | None:
        """The running session, or None (also for an id that is not a string)."""
        return self._sessions.get(session_id) if isinstance(session_id, str) else None

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._sessions

    def __iter__(self) -> Iterator[str]:
        return iter(self._sessions)

    def items(self) -> Iterator[tuple[str, LiveSession]]:
        return iter(self._sessions.items())

    def lookup(self, session_id: str) -> tuple[SessionRecord, LiveSession]:
        """The stored record and the running state of a session; ``not_found`` at ``/payload/session_id``."""
        record = self.store.sessions().get(session_id)
        live = self._sessions.get(session_id)
        if record is not None and session_id in self._parked:
            path = "/payload/session_id"
            raise RemoteProtocolError(
                ErrorCode.RESOURCE_LIMIT,
                f"{path}: session {session_id!r} is stored but not running: {self._parked[session_id]}"
                " (destroy it, or raise the budget and restart the daemon)",
                path,
            )
        if record is None or live is None:
            raise not_found(f"no session {session_id!r}", "/payload/session_id")
        return record, live

    def publish(self, event: envelope.Event, coalesce_key: Hashable | None = None) -> None:
        """An event for every connection (the hub paces those with a key by their session's frames);
        connections of StreamKit's dialect get it in StreamKit's shapes."""
        # Encoded only if sent: a held event is often replaced by a newer one first. The event is a
        # snapshot (its payload dicts are made for it, and stored params are never changed in place).
        variants = {streamkit.STREAMKIT: functools.partial(self._for_streamkit, event)}
        self.hub.publish(Broadcast.deferred(functools.partial(envelope.serialize, event), variants), coalesce_key)
        if event.event == "nodeadded":
            # StreamKit's UI shows a node it is told of as "Initializing" until a state event comes; compositord
            # reports a state when it changes, so its dialect is told at once that the new node runs.
            state = envelope.node_state_changed(event.payload["session_id"], event.payload["node_id"], None)
            encode = functools.partial(self._for_streamkit, state)
            self.hub.publish(Broadcast.deferred(encode, only_for=frozenset(streamkit.DIALECTS)))

    def _for_streamkit(self, event: envelope.Event) -> str:
        live = self.get(event.payload.get("session_id"))
        payload = streamkit.event_for_streamkit(
            event.event,
            event.payload,
            now=time.time(),
            image_data=self.image_data,
            session_age_s=time.monotonic() - live.started if live is not None else None,
        )
        return envelope.serialize(envelope.Event(event.event, payload))
