"""The durable store: sessions, nodes, connections and sanitized params in SQLite.

Promises (docs/DURABILITY.md says them for operators):

- Reads come from an in-memory mirror on the trio thread; every change updates
  the mirror at once and is queued for the writer thread, in the order the
  changes were made. Mirror records are never mutated after publication: a
  change replaces them (copy-on-write), so a held reference is a snapshot.
- A *sync* change (``wait_durable=True``, and every structural change) returns
  only after the COMMIT that contains it. An *async* change is committed by a
  group commit at most ``GROUP_COMMIT_INTERVAL`` (50 ms) after it was queued,
  well inside the 100 ms that the protocol promises.
- SQLite runs in WAL mode with ``synchronous=FULL``. In WAL mode NORMAL would
  already survive ``kill -9`` (a commit is in the WAL file, i.e. in the OS,
  before COMMIT returns), but a power cut could roll back commits whose WAL
  frames were never fsynced, and then ``tunenode``'s "answered after commit"
  would be a lie. FULL fsyncs the WAL at each commit; group commit bounds that
  to about 20 fsyncs a second for async traffic plus one per sync change.
- The writer queue is bounded (``QUEUE_CAPACITY``): when it is full, callers
  wait (push back) instead of growing memory.
- Params with a key starting with ``_`` at any depth are refused with
  ``LocalProtocolError``: the session logic strips them first; this is
  defence in depth.
- The schema is versioned with ``PRAGMA user_version``; a newer database than
  this code knows is refused rather than guessed at.
- One daemon per state directory: ``run`` takes an exclusive lock
  (``daemon/state/lock.py``) before it opens anything and holds it until the
  writer has stopped; a second daemon gets :class:`StoreLocked`.
- The store is checked before it is served: ``PRAGMA quick_check`` must say
  ``ok`` (else :class:`StoreCorrupt`, and the file is left as it is), and a
  missing or empty database where the marker file says one was created is
  :class:`StoreMissing`, not a fresh start. The marker
  (``compositord.sqlite3.created``) is written once the schema is committed.
- A full disk is not fatal: a change that cannot commit (SQLite's
  ``SQLITE_FULL``) is rolled back, its callers get :class:`StoreFull`, and
  every change queued on top of it fails the same way (it was planned on
  state that never reached the disk). The mirror is then reloaded from the
  disk, revert listeners hear which sessions went back, and the store takes
  new changes as before: they commit once there is space again.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

import trio

from compositord.daemon.state.lock import StateDirectoryLock, StateDirectoryLocked
from compositord.daemon.state.model import ConnectionRecord, NodeRecord, SessionRecord, refuse_private_keys
from compositord.protocol import pointer
from compositord.protocol.errors import LocalProtocolError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DB_FILE_NAME = "compositord.sqlite3"
MARKER_SUFFIX = ".created"  # compositord.sqlite3.created: a store was made here
GROUP_COMMIT_INTERVAL = 0.05
QUEUE_CAPACITY = 1024

_SCHEMA = """
CREATE TABLE sessions (
    session_id TEXT PRIMARY KEY,
    name TEXT NOT NULL
);
CREATE TABLE nodes (
    session_id TEXT NOT NULL,
    node_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    params TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (session_id, node_id)
);
CREATE TABLE connections (
    position INTEGER PRIMARY KEY,
    session_id TEXT NOT NULL,
    from_node TEXT NOT NULL,
    from_pin TEXT NOT NULL,
    to_node TEXT NOT NULL,
    to_pin TEXT NOT NULL,
    UNIQUE (session_id, from_node, from_pin, to_node, to_pin)
);
"""


class StoreError(Exception):
    """The database could not be opened or written; the mirror may be ahead of the disk."""


class StoreLocked(StoreError):
    """Another daemon holds the state directory (the message names it and the other pid)."""


class StoreCorrupt(StoreError):
    """The database fails its integrity check; it is left untouched for the operator."""


class StoreMissing(StoreError):
    """The database is missing or empty although the marker says a store was created here."""


class StoreFull(StoreError):
    """The disk under the store is full: this change was not stored (nothing of it is on disk or in the mirror).

    The store stays usable: later changes commit once there is space again.
    """


# ---- operations (for apply_atomically; the single-change methods use them too) ----


@dataclass(frozen=True)
class SetParams:
    session_id: str
    node_id: str
    params: Mapping[str, Any]


@dataclass(frozen=True)
class PutNode:
    """Add a node, or replace an existing one (kind, params and seq as given)."""

    session_id: str
    node: NodeRecord


@dataclass(frozen=True)
class RemoveNode:
    """Remove a node and every connection to or from it."""

    session_id: str
    node_id: str


@dataclass(frozen=True)
class AddConnection:
    session_id: str
    connection: ConnectionRecord


@dataclass(frozen=True)
class RemoveConnection:
    session_id: str
    connection: ConnectionRecord


StoreOp = SetParams | PutNode | RemoveNode | AddConnection | RemoveConnection

_Statement = tuple[str, tuple[Any, ...]]


@dataclass(eq=False)
class _WriteItem:
    statements: list[_Statement]
    done: trio.Event | None  # set on the trio thread once the item is committed (sync items only)
    queued_at: float = field(default_factory=time.monotonic)
    error: BaseException | None = None
    # The mirror generation it was planned on: a failed commit ends a generation (the mirror is reloaded),
    # and an item of an ended generation is refused unexecuted (it may build on what was lost).
    generation: int = 0


_STOP = _WriteItem([], None)

# A timed wait may end a little before its deadline; the group commit still counts as due then.
_WAKE_SLACK_S = 0.001


class _WriterInbox:
    """Changes from the trio thread to the writer thread, in order, without a lock per change.

    ``queue.Queue`` took its mutex and notified a condition for every change, and the trio thread
    waited whenever the writer held the mutex or the GIL: 13 % of its time at 600 tunes/s. Appending
    to a deque is atomic under the GIL. The writer is woken only when it must act: for a sync change
    or the stop sentinel (``urgent``), or for any change while it has no group-commit deadline of its
    own (``deadline_set``, which only the writer changes: it clears it after a commit and then looks
    at the deque again before it waits, so a change put in between is never left waiting). Bounded
    by the store's slots: a change takes one before it is put.
    """

    def __init__(self) -> None:
        self._items: collections.deque[_WriteItem] = collections.deque()
        self._wakeup = threading.Event()
        self.deadline_set = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: _WriteItem, *, urgent: bool) -> None:
        self._items.append(item)
        if urgent or not self.deadline_set:
            self._wakeup.set()

    def take_all(self, timeout: float | None) -> list[_WriteItem]:
        """Everything put so far, waiting up to ``timeout`` (None: until woken) while there is nothing."""
        if not self._items:
            self._wakeup.wait(timeout)
        self._wakeup.clear()
        taken = []
        while self._items:
            taken.append(self._items.popleft())
        return taken


@dataclass
class StoreStatistics:
    commits: int = 0
    items_written: int = 0
    queued: int = 0


def database_path(state_dir: Path) -> Path:
    return Path(state_dir) / DB_FILE_NAME


def marker_path(db_path: Path) -> Path:
    """The file that says a store was created at ``db_path`` (so a vanished one is an error, not a fresh start)."""
    return db_path.with_name(db_path.name + MARKER_SUFFIX)


def is_disk_full(exc: BaseException) -> bool:
    """SQLite's SQLITE_FULL: "database or disk is full"."""
    return isinstance(exc, sqlite3.OperationalError) and getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL


def _encode_params(params: Mapping[str, Any], where: str) -> str:
    try:
        return json.dumps(params, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise LocalProtocolError(f"{where}: params are not storable JSON: {exc}") from exc


class Store:
    def __init__(
        self,
        state_dir: Path,
        *,
        commit_interval: float = GROUP_COMMIT_INTERVAL,
        queue_capacity: int = QUEUE_CAPACITY,
        busy_timeout: float = 5.0,
        commit_observer: Callable[[float], None] | None = None,
    ) -> None:
        """``commit_observer(seconds)``: called on the writer thread with each COMMIT's duration (metrics)."""
        if queue_capacity < 1:
            raise ValueError("queue_capacity must be at least 1")
        self.state_dir = Path(state_dir)
        self.db_path = database_path(self.state_dir)
        self._commit_interval = commit_interval
        self._busy_timeout = busy_timeout  # how long the writer waits for a lock another process holds
        self._commit_observer = commit_observer
        self._capacity = queue_capacity
        # One extra place for the stop sentinel, which must never wait for a slot.
        self._inbox = _WriterInbox()  # bounded by the slots: a change takes one before it is put
        self._sessions: dict[str, SessionRecord] = {}
        self._sessions_view: Mapping[str, SessionRecord] = MappingProxyType(self._sessions)
        self._slots: trio.Semaphore | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._fatal: BaseException | None = None
        self._running = False
        self._stopping = False
        self._stats = StoreStatistics()
        self._generation = 0  # trio thread: the mirror's generation; +1 when a full disk made it reload
        self._ended_generation = -1  # writer thread: items of this generation or older are refused
        self._revert_listeners: list[Callable[[frozenset[str], Mapping[str, SessionRecord]], None]] = []

    # ---- lifecycle ----

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open (or create) the database, load the mirror, start the writer
        thread; on cancellation commit everything queued and close."""
        if self._running or self._token is not None:
            raise LocalProtocolError("Store.run() may be called only once")
        try:
            lock = StateDirectoryLock.acquire(self.state_dir)
        except StateDirectoryLocked as exc:
            raise StoreLocked(str(exc)) from None
        except OSError as exc:
            raise StoreError(f"cannot lock the state directory {self.state_dir}: {exc.strerror or exc}") from exc
        try:
            await self._run_locked(task_status)
        finally:
            lock.release()  # only once the writer has stopped: no other daemon opens the store before

    async def _run_locked(self, task_status: trio.TaskStatus[None]) -> None:
        self._running = True
        self._token = trio.lowlevel.current_trio_token()
        self._slots = trio.Semaphore(self._capacity)
        loaded = trio.Event()
        stopped = trio.Event()
        loaded_sessions: dict[str, SessionRecord] = {}
        thread = threading.Thread(
            target=self._writer_main,
            args=(loaded_sessions, loaded, stopped),
            name=f"compositord-store-writer({self.db_path})",
            daemon=True,
        )
        thread.start()
        try:
            await loaded.wait()
            if isinstance(self._fatal, StoreError):
                raise type(self._fatal)(str(self._fatal)) from self._fatal
            if self._fatal is not None:
                raise StoreError(f"cannot open the store at {self.db_path}: {self._fatal}") from self._fatal
            self._sessions.update(loaded_sessions)
            task_status.started()
            await stopped.wait()
            raise StoreError(f"the store writer stopped: {self._fatal}") from self._fatal
        finally:
            with trio.CancelScope(shield=True):
                self._stopping = True
                if not stopped.is_set():
                    self._inbox.put(_STOP, urgent=True)
                    await stopped.wait()
                self._running = False

    # ---- reads (trio thread) ----

    def sessions(self) -> Mapping[str, SessionRecord]:
        """The mirror, read-only. Records are snapshots: never mutate them."""
        return self._sessions_view

    def statistics(self) -> StoreStatistics:
        return StoreStatistics(commits=self._stats.commits, items_written=self._stats.items_written, queued=len(self._inbox))

    def add_revert_listener(self, listener: Callable[[frozenset[str], Mapping[str, SessionRecord]], None]) -> None:
        """``listener(session_ids, before)`` runs on the trio thread when changes that could not be stored
        (a full disk) were taken back out of the mirror: those sessions are as the disk has them again
        (:meth:`sessions`), and ``before`` holds them as the mirror had them until then (a session absent
        from it did not exist). Async changes have no caller to tell, so whoever published them (events,
        render loops) learns it here, and can tell what to take back."""
        self._revert_listeners.append(listener)

    # ---- changes (trio thread) ----

    async def create_session(self, session: SessionRecord) -> None:
        """Durable (committed) before it returns."""

        def plan(sessions: dict[str, SessionRecord]) -> tuple[list[_Statement], None]:
            if session.session_id in sessions:
                raise LocalProtocolError(f"session {session.session_id!r} exists already")
            statements: list[_Statement] = [
                ("INSERT INTO sessions (session_id, name) VALUES (?, ?)", (session.session_id, session.name))
            ]
            record = SessionRecord(session.session_id, session.name, {}, [])
            for node in session.nodes.values():
                statements.append(self._plan_put_node(record, node))
            for conn in session.connections:
                statements.append(self._plan_add_connection(record, conn))
            sessions[session.session_id] = record
            return statements, None

        await self._submit(plan, wait_durable=True)

    async def destroy_session(self, session_id: str) -> None:
        def plan(sessions: dict[str, SessionRecord]) -> tuple[list[_Statement], None]:
            self._session(sessions, session_id)
            del sessions[session_id]
            key = (session_id,)
            return [
                ("DELETE FROM connections WHERE session_id = ?", key),
                ("DELETE FROM nodes WHERE session_id = ?", key),
                ("DELETE FROM sessions WHERE session_id = ?", key),
            ], None

        await self._submit(plan, wait_durable=True)

    async def put_node(self, session_id: str, node: NodeRecord) -> None:
        await self.apply_atomically([PutNode(session_id, node)])

    async def remove_node(self, session_id: str, node_id: str) -> None:
        await self.apply_atomically([RemoveNode(session_id, node_id)])

    async def add_connection(self, session_id: str, conn: ConnectionRecord) -> None:
        await self.apply_atomically([AddConnection(session_id, conn)])

    async def remove_connection(self, session_id: str, conn: ConnectionRecord) -> None:
        await self.apply_atomically([RemoveConnection(session_id, conn)])

    async def set_params(self, session_id: str, node_id: str, params: Mapping[str, Any], *, wait_durable: bool) -> int:
        """Replace a node's params; returns its new seq. The mirror changes at
        once; with ``wait_durable`` this returns after COMMIT, otherwise the
        change is group-committed within ``commit_interval``."""
        (seq,) = await self.apply_atomically([SetParams(session_id, node_id, params)], wait_durable=wait_durable)
        assert seq is not None
        return seq

    async def apply_atomically(self, ops: Sequence[StoreOp], *, wait_durable: bool = True) -> list[int | None]:
        """Several changes in one transaction: all or none (a refused op changes
        nothing). Returns, per op, the node's new seq for ``SetParams``, else None."""

        def plan(sessions: dict[str, SessionRecord]) -> tuple[list[_Statement], list[int | None]]:
            statements: list[_Statement] = []
            results: list[int | None] = []
            copied: dict[str, SessionRecord] = {}
            for op in ops:
                record = copied.get(op.session_id)
                if record is None:
                    original = self._session(sessions, op.session_id)
                    record = SessionRecord(original.session_id, original.name, dict(original.nodes), list(original.connections))
                    copied[op.session_id] = record
                seq: int | None = None
                if isinstance(op, SetParams):
                    statement, seq = self._plan_set_params(record, op.node_id, op.params)
                    statements.append(statement)
                elif isinstance(op, PutNode):
                    statements.append(self._plan_put_node(record, op.node))
                elif isinstance(op, RemoveNode):
                    statements.extend(self._plan_remove_node(record, op.node_id))
                elif isinstance(op, AddConnection):
                    statements.append(self._plan_add_connection(record, op.connection))
                elif isinstance(op, RemoveConnection):
                    statements.append(self._plan_remove_connection(record, op.connection))
                else:
                    raise LocalProtocolError(f"not a store operation: {op!r}")
                results.append(seq)
            sessions.update(copied)
            return statements, results

        return await self._submit(plan, wait_durable=wait_durable)

    async def flush(self) -> None:
        """Returns once everything queued so far is committed."""
        await self._submit(lambda sessions: ([], None), wait_durable=True)

    # ---- planning: validate against a working copy, produce SQL (trio thread, no I/O) ----

    @staticmethod
    def _session(sessions: Mapping[str, SessionRecord], session_id: str) -> SessionRecord:
        try:
            return sessions[session_id]
        except KeyError:
            raise LocalProtocolError(f"no session {session_id!r} in the store") from None

    @staticmethod
    def _plan_put_node(record: SessionRecord, node: NodeRecord) -> _Statement:
        where = f"node {record.session_id}/{node.node_id}"
        refuse_private_keys(node.params, where)
        encoded = _encode_params(node.params, where)
        record.nodes[node.node_id] = NodeRecord(node.node_id, node.kind, json.loads(encoded), node.seq)
        return (
            "INSERT INTO nodes (session_id, node_id, kind, params, seq) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (session_id, node_id) DO UPDATE SET kind = excluded.kind, params = excluded.params, seq = excluded.seq",
            (record.session_id, node.node_id, node.kind, encoded, node.seq),
        )

    @staticmethod
    def _plan_set_params(record: SessionRecord, node_id: str, params: Mapping[str, Any]) -> tuple[_Statement, int]:
        where = f"node {record.session_id}/{node_id}"
        old = record.nodes.get(node_id)
        if old is None:
            raise LocalProtocolError(f"{where} is not in the store")
        refuse_private_keys(params, where)
        encoded = _encode_params(params, where)
        seq = old.seq + 1
        # A decoded copy: the caller may keep mutating its dict; the mirror must not change with it.
        record.nodes[node_id] = NodeRecord(node_id, old.kind, json.loads(encoded), seq)
        return (
            "UPDATE nodes SET params = ?, seq = ? WHERE session_id = ? AND node_id = ?",
            (encoded, seq, record.session_id, node_id),
        ), seq

    @staticmethod
    def _plan_remove_node(record: SessionRecord, node_id: str) -> list[_Statement]:
        if node_id not in record.nodes:
            raise LocalProtocolError(f"node {record.session_id}/{node_id} is not in the store")
        del record.nodes[node_id]
        record.connections = [c for c in record.connections if node_id not in (c.from_node, c.to_node)]
        return [
            (
                "DELETE FROM connections WHERE session_id = ? AND (from_node = ? OR to_node = ?)",
                (record.session_id, node_id, node_id),
            ),
            ("DELETE FROM nodes WHERE session_id = ? AND node_id = ?", (record.session_id, node_id)),
        ]

    @staticmethod
    def _plan_add_connection(record: SessionRecord, conn: ConnectionRecord) -> _Statement:
        for end in (conn.from_node, conn.to_node):
            if end not in record.nodes:
                raise LocalProtocolError(f"connection {conn}: node {record.session_id}/{end} is not in the store")
        if conn in record.connections:
            raise LocalProtocolError(f"connection {conn} exists already in session {record.session_id!r}")
        record.connections.append(conn)
        return (
            "INSERT INTO connections (session_id, from_node, from_pin, to_node, to_pin) VALUES (?, ?, ?, ?, ?)",
            (record.session_id, conn.from_node, conn.from_pin, conn.to_node, conn.to_pin),
        )

    @staticmethod
    def _plan_remove_connection(record: SessionRecord, conn: ConnectionRecord) -> _Statement:
        if conn not in record.connections:
            raise LocalProtocolError(f"connection {conn} is not in session {record.session_id!r}")
        record.connections.remove(conn)
        return (
            "DELETE FROM connections WHERE session_id = ? AND from_node = ? AND from_pin = ? AND to_node = ? AND to_pin = ?",
            (record.session_id, conn.from_node, conn.from_pin, conn.to_node, conn.to_pin),
        )

    # ---- submission (trio thread) ----

    async def _submit(
        self, plan: Callable[[dict[str, SessionRecord]], tuple[list[_Statement], Any]], *, wait_durable: bool
    ) -> Any:
        if self._slots is None or not self._running or self._stopping:
            raise LocalProtocolError("the store is not running (start Store.run first)")
        if self._fatal is not None:
            raise StoreError(f"the store writer failed: {self._fatal}") from self._fatal
        # Push back while the writer queue is full; otherwise no schedule point, since a caller may hold its
        # session's lock around this (sessions/live.py, holding).
        try:
            self._slots.acquire_nowait()
        except trio.WouldBlock:
            await self._slots.acquire()
        try:
            if self._stopping or self._fatal is not None:
                # The writer ends after the stop sentinel: an item queued behind it would never commit.
                raise StoreError("the store is shutting down; the change was not made")
            # Plan against the state as it is *now* (it may have changed while we waited),
            # and publish before any checkpoint, so queue order equals mirror order.
            working = dict(self._sessions)
            statements, result = plan(working)
            item = _WriteItem(statements, trio.Event() if wait_durable else None, generation=self._generation)
            self._inbox.put(item, urgent=wait_durable)
        except BaseException:
            self._slots.release()
            raise
        self._sessions.clear()
        self._sessions.update(working)
        if item.done is not None:
            await item.done.wait()
            if isinstance(item.error, StoreFull):
                raise StoreFull(str(item.error)) from item.error.__cause__
            if item.error is not None:
                raise StoreError(f"commit failed: {item.error}") from item.error
        return result

    def _apply_revert(self, sessions: dict[str, SessionRecord], ended: int) -> None:
        """Trio thread: the mirror becomes what the disk holds after a commit that could not be made."""
        if ended != self._generation:
            return  # a later reload already replaced it
        self._generation += 1
        changed = frozenset(
            session_id
            for session_id in self._sessions.keys() | sessions.keys()
            if self._sessions.get(session_id) != sessions.get(session_id)
        )
        before = {session_id: self._sessions[session_id] for session_id in changed if session_id in self._sessions}
        self._sessions.clear()
        self._sessions.update(sessions)
        log.warning("the disk under the store is full: %d session(s) reverted to what is stored", len(changed))
        for listener in self._revert_listeners:
            listener(changed, MappingProxyType(before))

    # ---- writer thread: the only code that talks to SQLite ----

    def _call_soon(self, fn: Callable[[], object]) -> None:
        assert self._token is not None
        with contextlib.suppress(trio.RunFinishedError):  # trio is gone: nobody is waiting any more
            self._token.run_sync_soon(fn)

    def _writer_main(self, loaded_sessions: dict[str, SessionRecord], loaded: trio.Event, stopped: trio.Event) -> None:
        conn: sqlite3.Connection | None = None
        try:
            try:
                conn = open_database(self.db_path, busy_timeout=self._busy_timeout)
                loaded_sessions.update(load_sessions(conn))
            except BaseException as exc:
                self._fatal = exc
                return
            finally:
                self._call_soon(loaded.set)
            try:
                self._write_loop(conn)
            except BaseException as exc:
                self._fatal = exc
                self._fail_queued(exc)
        finally:
            if conn is not None:
                with suppress(sqlite3.Error):
                    conn.close()
            self._call_soon(stopped.set)

    def _fail_queued(self, exc: BaseException) -> None:
        items = [item for item in self._inbox.take_all(timeout=0) if item is not _STOP]
        self._call_soon(functools.partial(self._release_slots, len(items)))
        for item in items:
            self._finish(item, exc)

    def _release_slots(self, count: int) -> None:
        assert self._slots is not None
        for _ in range(count):
            self._slots.release()

    def _finish(self, item: _WriteItem, error: BaseException | None) -> None:
        if item.done is not None:
            item.error = error
            self._call_soon(item.done.set)

    def _write_loop(self, conn: sqlite3.Connection) -> None:
        uncommitted: list[_WriteItem] = []
        first_uncommitted_at: float | None = None
        while True:
            if first_uncommitted_at is None:
                timeout = None
            else:
                timeout = max(0.0, first_uncommitted_at + self._commit_interval - time.monotonic())
            # Everything queued meanwhile comes in one round: each round needs the GIL back a few
            # times, and while the trio thread is busy each costs up to a GIL switch interval; item by
            # item the writer fell behind 600 tunes/s and the full queue then held every tune of the
            # session back for seconds (perf/README.md, control_latency).
            batch = self._inbox.take_all(timeout)
            if _STOP in batch:
                batch = batch[: batch.index(_STOP) + 1]  # nothing is put after the stop sentinel
            stopping = bool(batch) and batch[-1] is _STOP
            items = batch[:-1] if stopping else batch
            if items:
                self._call_soon(functools.partial(self._release_slots, len(items)))
            stale = [item for item in items if item.generation <= self._ended_generation]
            if stale:
                # Planned on a mirror that held changes the disk never got: refused, never executed.
                lost = StoreFull("not stored: an earlier change could not be stored (the disk is full)")
                for item in stale:
                    self._finish(item, lost)
                items = [item for item in items if item.generation > self._ended_generation]
            if items:
                if first_uncommitted_at is None:
                    # Measured from when the caller queued it, so a backlog cannot stretch the promise.
                    first_uncommitted_at = items[0].queued_at
                    self._inbox.deadline_set = True
                uncommitted.extend(items)
            try:
                for item in items:
                    if item.statements:
                        if not conn.in_transaction:
                            conn.execute("BEGIN IMMEDIATE")
                        for sql, args in item.statements:
                            conn.execute(sql, args)
                        self._stats.items_written += 1
                due = (
                    first_uncommitted_at is not None
                    and time.monotonic() >= first_uncommitted_at + self._commit_interval - _WAKE_SLACK_S
                )
                waited_on = any(item.done is not None for item in items)
                if uncommitted and (stopping or waited_on or due):
                    if conn.in_transaction:
                        commit_started = time.monotonic()
                        conn.execute("COMMIT")
                        self._stats.commits += 1
                        if self._commit_observer is not None:
                            self._commit_observer(time.monotonic() - commit_started)
                    for waiting in uncommitted:
                        self._finish(waiting, None)
                    uncommitted = []
                    first_uncommitted_at = None
                    self._inbox.deadline_set = False  # from now on a new item must wake the writer
            except BaseException as exc:
                if is_disk_full(exc):
                    self._disk_full(conn, uncommitted, exc)
                    uncommitted = []
                    first_uncommitted_at = None
                    self._inbox.deadline_set = False
                else:
                    # The mirror is already ahead of the disk: this is fatal, and every sync
                    # caller whose change was in the lost transaction learns it.
                    for waiting in uncommitted:
                        self._finish(waiting, exc)
                    raise
            if stopping:
                return

    def _disk_full(self, conn: sqlite3.Connection, lost: list[_WriteItem], exc: BaseException) -> None:
        """Writer thread: roll back, refuse the lost changes, and reload the mirror from what the disk holds."""
        with suppress(sqlite3.Error):
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        ended = max((item.generation for item in lost), default=self._ended_generation)
        self._ended_generation = max(self._ended_generation, ended)
        error = StoreFull(f"not stored: the disk under the store ({self.db_path.parent}) is full ({exc})")
        error.__cause__ = exc
        # The revert is scheduled before the refusals: trio runs them in order, so a caller that hears
        # StoreFull already reads the mirror without the change that was refused.
        self._call_soon(functools.partial(self._apply_revert, load_sessions(conn), ended))
        for item in lost:
            self._finish(item, error)


# ---- SQLite helpers (writer thread, and tools that inspect a state dir) ----


QUICK_CHECK_ROWS = 5  # problems named in StoreCorrupt's message (quick_check lists them all)


def open_database(db_path: Path, *, busy_timeout: float = 5.0) -> sqlite3.Connection:
    """Open or create the database, in WAL mode with synchronous=FULL, at the current schema, checked.

    Refuses (:class:`StoreMissing`) a missing or empty file where the marker says a store was made,
    and (:class:`StoreCorrupt`) one whose ``PRAGMA quick_check`` is not ``ok``; writes the marker once
    the store is known good.
    """
    db_path.parent.mkdir(parents=True, exist_ok=True)
    marker = marker_path(db_path)
    size = db_path.stat().st_size if db_path.exists() else None
    if marker.exists() and not size:
        state = "missing" if size is None else "empty (0 bytes)"
        raise StoreMissing(
            f"{db_path} is {state}, but {marker.name} says a store was created here: refusing to start with no sessions."
            f" Restore the database from a backup, or delete {marker} to start with an empty store"
        )
    # isolation_level=None: transactions are explicit (BEGIN/COMMIT), so group commit is ours to decide.
    conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=True)
    try:
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise _corrupt(db_path, [str(exc)]) from exc
        if str(mode).lower() != "wal":
            raise StoreError(f"{db_path}: SQLite refused WAL mode (journal_mode is {mode!r})")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        try:
            problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
        except sqlite3.DatabaseError as exc:
            raise _corrupt(db_path, [str(exc)]) from exc
        if problems != ["ok"]:
            raise _corrupt(db_path, problems)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            conn.execute("BEGIN IMMEDIATE")
            for statement in filter(None, (s.strip() for s in _SCHEMA.split(";"))):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")
        elif version > SCHEMA_VERSION:
            raise StoreError(f"{db_path}: schema version {version} is newer than this compositord understands ({SCHEMA_VERSION})")
        if not marker.exists():
            _write_marker(marker)
        return conn
    except BaseException:
        conn.close()
        raise


def _corrupt(db_path: Path, problems: list[str]) -> StoreCorrupt:
    shown = "; ".join(problems[:QUICK_CHECK_ROWS]) + (
        f"; and {len(problems) - QUICK_CHECK_ROWS} more" if len(problems) > QUICK_CHECK_ROWS else ""
    )
    return StoreCorrupt(
        f"{db_path} is damaged (SQLite's integrity check: {shown}); the daemon will not serve from it, and the file is"
        " left as it is. Restore it from a backup, or move it away (with its -wal file and the .created marker) to start empty"
    )


def _write_marker(marker: Path) -> None:
    """Written and fsynced with its directory entry, so that once it exists it survives a crash as the store does."""
    fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    try:
        os.write(fd, b"compositord created its store beside this file; without the store, the daemon will not start\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    directory = os.open(marker.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def load_sessions(conn: sqlite3.Connection) -> dict[str, SessionRecord]:
    sessions: dict[str, SessionRecord] = {}
    for session_id, name in conn.execute("SELECT session_id, name FROM sessions ORDER BY rowid"):
        sessions[session_id] = SessionRecord(session_id, name, {}, [])
    for session_id, node_id, kind, params, seq in conn.execute(
        "SELECT session_id, node_id, kind, params, seq FROM nodes ORDER BY rowid"
    ):
        session = sessions.get(session_id)
        if session is not None:
            session.nodes[node_id] = NodeRecord(node_id, kind, json.loads(params), seq)
    for session_id, from_node, from_pin, to_node, to_pin in conn.execute(
        "SELECT session_id, from_node, from_pin, to_node, to_pin FROM connections ORDER BY position"
    ):
        session = sessions.get(session_id)
        if session is not None:
            session.connections.append(ConnectionRecord(from_node, from_pin, to_node, to_pin))
    return sessions


class StoredKey(NamedTuple):
    session_id: str
    node_id: str
    pointer: str  # JSON pointer of the key inside the node's params
    key: str


def iter_stored_keys(db_path: Path) -> Iterator[StoredKey]:
    """Every key at any depth of every node's params as stored on disk, read
    through a separate read-only connection (sees committed data only). The
    end-to-end test scans these for keys starting with ``_``."""

    def walk(value: Any, path: str) -> Iterator[tuple[str, str]]:
        if isinstance(value, dict):
            for key, item in value.items():
                here = pointer.join(path, key)
                yield here, key
                yield from walk(item, here)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                yield from walk(item, pointer.join(path, index))

    conn = sqlite3.connect(f"{Path(db_path).resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT session_id, node_id, params FROM nodes ORDER BY rowid").fetchall()
    finally:
        conn.close()
    for session_id, node_id, params in rows:
        for path, key in walk(json.loads(params), ""):
            yield StoredKey(session_id, node_id, path, key)


@asynccontextmanager
async def open_store(state_dir: Path, **kwargs: Any) -> AsyncIterator[Store]:
    """``async with open_store(dir) as store:`` runs the store for the block
    and flushes and closes it on the way out."""
    store = Store(state_dir, **kwargs)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            try:
                yield store
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # One failure (the store's, or the block's own) reads better unwrapped.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
