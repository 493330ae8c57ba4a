"""The session logic: every action of PROTOCOL.md section 3, on the trio thread.

Order of work for a change (PROTOCOL.md section 3, steps 1-6): take the stamp,
strip every ``_`` key, compute the resulting params (replace or RFC 7396 merge
patch against the durable params), validate them whole, store them, hand the
full validated params plus the stamp to the session's engine, and tell
every connection (``nodeparamschanged``). Anything refused before the store
step changes nothing.

Ordering (rule S1): a per-session lock covers everything from reading the
durable params to publishing the event, so two connections tuning the same
node cannot interleave a read and a write; the wait for the COMMIT
(``tunenode``) happens after the lock is released, so a slow fsync never holds
up other edits, and the reply still only goes out once the change is durable.

Acks: the params channel keeps one :class:`AckBook` per node here (rules S2,
S3, S5, S6); the view channel's acks live in the engine.

The engines are known only through ``engine.api``: one per session, made by the
``EngineFactory`` the service is given; this service is the ``EngineEvents``
sink of them all.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from compositord.daemon.control.connection import Connection
from compositord.daemon.control.hub import Hub
from compositord.daemon.control.mailbox import MailboxFull
from compositord.daemon.control.outgoing import Broadcast
from compositord.daemon.engine import api
from compositord.daemon.state.model import ConnectionRecord, NodeRecord, SessionRecord
from compositord.daemon.state.store import (
    AddConnection,
    PutNode,
    RemoveConnection,
    RemoveNode,
    SetParams,
    Store,
    StoreError,
    StoreOp,
)
from compositord.protocol import causal, envelope, frames, pointer
from compositord.protocol import params as node_params
from compositord.protocol.causal import AckBook, Stamp
from compositord.protocol.errors import ErrorCode, FieldError, LocalProtocolError, RemoteProtocolError
from compositord.protocol.params import PREVIEW_KIND, PUSH_KIND

log = logging.getLogger(__name__)

# Each sender of a connection has an entry in the acks maps until the connection closes (S5).
MAX_SENDERS_PER_CONNECTION = 16

# Pushed frames name their node by a hash of its id; hashing every node id at 30 frames a second adds up.
_node_id_hash = functools.lru_cache(maxsize=4096)(frames.node_id_hash)


def _not_found(what: str, path: str) -> RemoteProtocolError:
    return RemoteProtocolError(ErrorCode.NOT_FOUND, f"{path}: {what}", path)


@dataclass
class _SessionState:
    """What the service keeps per session besides the store's records."""

    engine: api.Engine
    lock: trio.Lock = field(default_factory=trio.Lock)
    acks: dict[str, AckBook] = field(default_factory=dict)  # params channel, per node
    last_view: dict[str, dict[str, Any]] = field(default_factory=dict)  # per node, without "_" keys
    last_view_acks: dict[str, dict[str, int]] = field(default_factory=dict)  # per node: the acks sent with last_view
    node_errors: dict[str, str] = field(default_factory=dict)  # nodes in the error state, with why
    preview_subscribers: dict[str, set[Connection]] = field(default_factory=dict)  # sink::preview node -> connections
    make_book: Callable[[], AckBook] = AckBook

    def book(self, node_id: str) -> AckBook:
        found = self.acks.get(node_id)
        if found is None:
            found = self.acks[node_id] = self.make_book()
        return found


@dataclass
class _Refusal(Exception):
    """A refused request, with the stamps it carried (rule S6: each counts as processed)."""

    error: RemoteProtocolError
    stamps: list[tuple[str, Stamp]] = field(default_factory=list)  # (node_id, stamp)


@dataclass(frozen=True)
class _Tune:
    """One tune with where it sat in the request, for error paths."""

    action: envelope.TuneNode
    body_path: str  # "/payload/message/PatchParams", "/payload/operations/3/message/UpdateParams"


class SessionService:
    """The dispatcher of every connection: parses requests, runs actions, publishes events."""

    def __init__(
        self,
        store: Store,
        hub: Hub,
        engine_factory: api.EngineFactory,
        *,
        retired_acks_grace_s: float = causal.RETIRED_ACKS_GRACE_S,
        max_retired_acks: int = causal.MAX_RETIRED_ACKS,
    ) -> None:
        self._store = store
        # Rule S7: how long and how many closed senders' params acks getpipeline still reports, per node.
        self._make_book: Callable[[], AckBook] = functools.partial(
            AckBook, retired_grace_s=retired_acks_grace_s, max_retired=max_retired_acks
        )
        self._make_book()  # bad settings fail here, at start-up, not at the first tune
        self._hub = hub
        self._engine_factory = engine_factory
        self._sessions: dict[str, _SessionState] = {}
        self._structure_lock = trio.Lock()  # createsession / destroysession

    # ------------------------------------------------------------------ lifecycle

    @property
    def engines(self) -> dict[str, api.Engine]:
        return {session_id: state.engine for session_id, state in self._sessions.items()}

    def frame_period(self, session_id: Any) -> float | None:
        """Seconds per output frame of a running session (the hub paces its events by it); None if unknown."""
        state = self._sessions.get(session_id)
        fps = state.engine.statistics().fps if state is not None else 0
        return 1.0 / fps if fps > 0 else None

    async def open_session(self, record: SessionRecord) -> None:
        """Start the engine of a session that is in the store; returns after its first frame."""
        engine = self._engine_factory(record.copy(), self)
        self._sessions[record.session_id] = _SessionState(engine, make_book=self._make_book)
        engine.start()
        await engine.wait_first_frame()

    async def stop_all(self, timeout: float) -> None:
        """Stop every engine: all are told at once, then each is waited for (up to ``timeout`` each)."""
        states = list(self._sessions.values())
        self._sessions.clear()
        for state in states:
            state.engine.submit(api.Stop())
        for state in states:
            await trio.to_thread.run_sync(state.engine.stop, timeout)

    # ------------------------------------------------------------------ what the engines report (api.EngineEvents, trio thread)

    def on_event(self, event: api.Event) -> None:
        # The most frequent first: a frame end every frame, view data whenever the layout moves.
        if isinstance(event, api.FrameEnded):
            self._hub.frame_ended(event.session_id)  # what the hub holds of the session goes out now
        elif isinstance(event, api.ViewData):
            self._on_view_data(event)
        elif isinstance(event, api.NodeStats):
            if event.session_id in self._sessions:
                event_out = envelope.node_stats_updated(event.session_id, event.node_id, event.stats)
                self._publish(event_out, (event.session_id, event.node_id, "stats"))
        elif isinstance(event, api.NodeState):
            self._on_node_state(event.session_id, event.node_id, event.error)
        elif isinstance(event, api.PreviewUpdated):
            self._on_preview(event)
        elif isinstance(event, api.Started):
            log.debug("session %s: first frame rendered", event.session_id)
        elif isinstance(event, api.Failed) and event.session_id in self._sessions:
            log.error("session %s: the engine stopped: %s", event.session_id, event.message)

    def _on_view_data(self, event: api.ViewData) -> None:
        state = self._sessions.get(event.session_id)
        if state is None:
            return  # a late report of a destroyed session
        layout = causal.strip_private(dict(event.layout))
        state.last_view[event.node_id] = layout
        state.last_view_acks[event.node_id] = dict(event.acks)
        published = envelope.node_view_data_updated(
            event.session_id, event.node_id, layout, event.stamp, event.acks, event.seq, event.timestamp
        )
        self._publish(published, (event.session_id, event.node_id, causal.VIEW_CHANNEL))

    def _on_node_state(self, session_id: str, node_id: str, message: str | None) -> None:
        """A node entered (``message``) or left (None) its error state: remembered for
        ``getpipeline`` and told to every client with ``nodestatechanged``."""
        state = self._sessions.get(session_id)
        record = self._store.sessions().get(session_id)
        if state is None or record is None or node_id not in record.nodes:
            return  # a late report about a session or node that is gone
        if message:
            log.warning("session %s node %s: %s", session_id, node_id, message)
            if state.node_errors.get(node_id) == message:
                return
            state.node_errors[node_id] = message
        else:
            if state.node_errors.pop(node_id, None) is None:
                return
            log.info("session %s node %s: error cleared", session_id, node_id)
        self._publish(envelope.node_state_changed(session_id, node_id, message or None), (session_id, node_id, "state"))

    def _on_preview(self, event: api.PreviewUpdated) -> None:
        """A ``sink::preview`` node encoded a thumbnail: ``nodepreviewupdated`` to its subscribers only,
        coalesced per connection (a slow client gets the latest, not a backlog)."""
        state = self._sessions.get(event.session_id)
        subscribers = state.preview_subscribers.get(event.node_id) if state is not None else None
        if not subscribers:
            return
        published = envelope.node_preview_updated(event.session_id, event.node_id, **_preview_fields(event.image))
        message = Broadcast(envelope.serialize(published))
        key = (event.session_id, event.node_id, "preview")
        for connection in list(subscribers):
            try:
                connection.deliver([(key, message)])
            except MailboxFull as exc:
                subscribers.discard(connection)
                connection.close_for_policy(f"too slow: {exc}")

    # ------------------------------------------------------------------ the Dispatcher protocol

    def connection_opened(self, connection: Connection) -> None:
        self._hub.subscribe(connection)

    def connection_closed(self, connection: Connection) -> None:
        self._hub.unsubscribe(connection)
        for state in self._sessions.values():
            for subscribers in state.preview_subscribers.values():
                subscribers.discard(connection)
        now = time.monotonic()
        for sender in connection.senders:  # rule S5, both channels; S7 keeps the params acks as retired acks
            for state in self._sessions.values():
                for book in state.acks.values():
                    book.retire(sender, now)
                state.engine.submit(api.ForgetSender(sender))

    async def handle_text(self, connection: Connection, text: str) -> None:
        try:
            # The connection enforced the size limit already; the envelope checks everything else.
            message = envelope.parse_message(text, max_bytes=len(text) * 4 + 1)
        except RemoteProtocolError as error:
            self._send(connection, envelope.error_response(error, envelope.correlation_id_of(text)))
            return
        if not isinstance(message, envelope.Request):
            error = RemoteProtocolError(ErrorCode.BAD_ENVELOPE, '/type: a client sends only messages of type "request"', "/type")
            self._send(connection, envelope.error_response(error, getattr(message, "correlation_id", None)))
            return
        correlation_id = message.correlation_id
        try:
            try:
                action = envelope.parse_action(message)
            except RemoteProtocolError as error:
                stamps = envelope.stamps_of(message)
                self._refuse_stamps(connection, message.payload.get("session_id"), stamps)
                raise _Refusal(error, stamps) from None
            response = await self._run(connection, action, correlation_id)
        except _Refusal as refusal:
            self._send(connection, _refusal_response(refusal, correlation_id))
            return
        except RemoteProtocolError as error:
            self._send(connection, envelope.error_response(error, correlation_id))
            return
        except StoreError:
            raise  # the store cannot write: the daemon stops rather than answer without durability
        except Exception as exc:
            # A bug on this side must not take the connection (or the daemon) down: the client gets `internal`.
            log.exception("internal error handling %s", message.action)
            error = RemoteProtocolError(ErrorCode.INTERNAL, f"internal error: {type(exc).__name__}")
            self._send(connection, envelope.error_response(error, correlation_id))
            return
        if response is not None:
            self._send(connection, response)

    def handle_binary(self, connection: Connection, data: bytes) -> None:
        """A pushed frame (PROTOCOL.md section 6) for every ``video::push`` node with the header's id hash.

        A refused frame (bad header, byte count, unknown node, a shape other than the node's params)
        is an ``error`` event on this connection only; it is dropped and the node keeps its last good frame.
        """
        try:
            header = frames.parse_frame_header(data)
            targets = self._push_targets(header)
        except RemoteProtocolError as error:
            self._send(connection, envelope.error_event(error))
            return
        pixels = memoryview(data)[frames.HEADER_SIZE :]  # no copy on the way to the engines
        for engine, node_id in targets:
            engine.push_frame(api.PushedFrame(node_id, header.width, header.height, header.pixel_format, header.pts_us, pixels))

    def _push_targets(self, header: frames.FrameHeader) -> list[tuple[api.Engine, str]]:
        """The push nodes a frame goes to: the node id may be used in several sessions (each gets it)."""
        targets: list[tuple[api.Engine, str]] = []
        for session_id, record in self._store.sessions().items():
            state = self._sessions.get(session_id)
            if state is None:
                continue
            for node_id, node in record.nodes.items():
                if _node_id_hash(node_id) != header.node_id_hash:
                    continue
                where = f"node {node_id!r} of session {session_id!r}"
                if node.kind != PUSH_KIND:
                    raise RemoteProtocolError(
                        ErrorCode.INVALID_PARAMS,
                        f"frame header /node_id_hash: {where} is a {node.kind}; only {PUSH_KIND} nodes take pushed frames",
                        "/node_id_hash",
                    )
                expected = node_params.with_defaults(PUSH_KIND, node.params)
                for field_name, got in (
                    ("width", header.width),
                    ("height", header.height),
                    ("pixel_format", header.pixel_format),
                ):
                    if expected[field_name] != got:
                        raise RemoteProtocolError(
                            ErrorCode.INVALID_PARAMS,
                            f"frame header /{field_name}: {where} takes {expected['width']}x{expected['height']} "
                            f"{expected['pixel_format']} frames, got {header.width}x{header.height} {header.pixel_format}",
                            f"/{field_name}",
                        )
                targets.append((state.engine, node_id))
        if not targets:
            raise RemoteProtocolError(
                ErrorCode.NOT_FOUND,
                f"frame header /node_id_hash: no node of a running session has the id hash {header.node_id_hash:#018x}",
                "/node_id_hash",
            )
        return targets

    def refuse(self, connection: Connection, error: RemoteProtocolError, correlation_id: str | None) -> None:
        self._send(connection, envelope.error_response(error, correlation_id))

    # ------------------------------------------------------------------ actions

    async def _run(self, connection: Connection, action: envelope.Action, cid: str | None) -> envelope.Response | None:
        if isinstance(action, envelope.GetPipeline):
            return self._getpipeline(action, cid)
        if isinstance(action, envelope.ListSessions):
            return envelope.sessions_listed(cid, self._session_list())
        if isinstance(action, envelope.CreateSession):
            return await self._createsession(action, cid)
        if isinstance(action, envelope.DestroySession):
            return await self._destroysession(action, cid)
        if isinstance(action, envelope.TuneNode):
            return await self._tunenode(connection, action, cid)
        if isinstance(action, envelope.ApplyBatch):
            return await self._applybatch(connection, action, cid)
        if isinstance(action, (envelope.GetPreview, envelope.SubscribePreview, envelope.UnsubscribePreview)):
            return self._preview_action(connection, action, cid)
        if isinstance(action, (envelope.AddNode, envelope.RemoveNode, envelope.Connect, envelope.Disconnect)):
            await self._structure(action)
            return envelope.success(cid)
        raise LocalProtocolError(f"no handler for {type(action).__name__}")

    def _session(self, session_id: str) -> tuple[SessionRecord, _SessionState]:
        record = self._store.sessions().get(session_id)
        state = self._sessions.get(session_id)
        if record is None or state is None:
            raise _not_found(f"no session {session_id!r}", "/payload/session_id")
        return record, state

    def _getpipeline(self, action: envelope.GetPipeline, cid: str | None) -> envelope.Response:
        record, state = self._session(action.session_id)
        nodes: dict[str, dict[str, Any]] = {}
        now = time.monotonic()
        for node_id, node in record.nodes.items():
            entry: dict[str, Any] = {
                "kind": node.kind,
                "params": dict(node.params),
                "seq": node.seq,
                "state": envelope.node_state(state.node_errors.get(node_id)),
            }
            # The acks as of this state (S2), per channel: a client that resyncs drops the pending
            # values already processed at once instead of masking them until the node's next event.
            entry["acks"] = state.book(node_id).as_dict() if node_id in state.acks else {}
            # S7: the acks of closed connections, so a reconnecting client re-sends only what was not processed.
            entry["retired_acks"] = state.book(node_id).retired_as_dict(now) if node_id in state.acks else {}
            if node_id in state.last_view:
                entry["view_data"] = dict(state.last_view[node_id])
                entry["view_acks"] = dict(state.last_view_acks.get(node_id, {}))
            nodes[node_id] = entry
        return envelope.pipeline_response(
            cid, session_id=record.session_id, nodes=nodes, connections=[c.to_json() for c in record.connections]
        )

    def _preview_action(
        self,
        connection: Connection,
        action: envelope.GetPreview | envelope.SubscribePreview | envelope.UnsubscribePreview,
        cid: str | None,
    ) -> envelope.Response:
        record, state = self._session(action.session_id)
        node = record.nodes.get(action.node_id)
        if node is None:
            raise _not_found(f"no node {action.node_id!r} in this session", "/payload/node_id")
        if node.kind != PREVIEW_KIND:
            raise RemoteProtocolError(
                ErrorCode.INVALID_PARAMS,
                f"/payload/node_id: node {action.node_id!r} is a {node.kind}, not a {PREVIEW_KIND}",
                "/payload/node_id",
            )
        if isinstance(action, envelope.SubscribePreview):
            state.preview_subscribers.setdefault(action.node_id, set()).add(connection)
            return envelope.success(cid)
        if isinstance(action, envelope.UnsubscribePreview):
            state.preview_subscribers.get(action.node_id, set()).discard(connection)
            return envelope.success(cid)
        image = state.engine.preview(action.node_id)
        if image is None:
            raise _not_found(
                f"node {action.node_id!r} has no thumbnail yet (it makes one once a compositor feeds its input)",
                "/payload/node_id",
            )
        return envelope.preview_response(cid, action.session_id, action.node_id, **_preview_fields(image))

    def _session_list(self) -> list[dict[str, Any]]:
        return [
            {"session_id": s.session_id, "name": s.name, "nodes": len(s.nodes)}
            for s in self._store.sessions().values()
            if s.session_id in self._sessions
        ]

    async def _createsession(self, action: envelope.CreateSession, cid: str | None) -> envelope.Response:
        session_id = str(uuid.uuid4())
        record = SessionRecord.from_pipeline(session_id, action.name, action.pipeline)
        async with self._structure_lock:
            await self._store.create_session(record)
            try:
                await self.open_session(self._store.sessions()[session_id])
            except BaseException:
                self._sessions.pop(session_id, None)
                with trio.CancelScope(shield=True):
                    await self._store.destroy_session(session_id)
                raise
        self._publish(envelope.session_created_event(session_id, action.name))
        return envelope.session_created_response(cid, session_id, action.name)

    async def _destroysession(self, action: envelope.DestroySession, cid: str | None) -> envelope.Response:
        session_id = action.session_id
        async with self._structure_lock:
            _, state = self._session(session_id)
            async with state.lock:
                del self._sessions[session_id]
                await self._store.destroy_session(session_id)
            await trio.to_thread.run_sync(state.engine.stop)
        self._publish(envelope.session_destroyed_event(session_id))
        return envelope.session_destroyed_response(cid, session_id)

    # ---- structure: addnode, removenode, connect, disconnect (each one store transaction)

    async def _structure(self, action: envelope.AddNode | envelope.RemoveNode | envelope.Connect | envelope.Disconnect) -> None:
        _, state = self._session(action.session_id)
        async with state.lock:
            record, _ = self._session(action.session_id)  # it may have changed while we waited for the lock
            working = _Working(record)
            events = working.apply(action, "/payload")
            await self._store.apply_atomically(working.ops, wait_durable=False)
            self._after_structure_change(record.session_id, state, working)
            for event in events:
                self._publish(event)
        await self._store.flush()  # answered once committed; the commit wait holds up no other edit

    def _after_structure_change(self, session_id: str, state: _SessionState, working: _Working) -> None:
        state.engine.submit(api.TopologyUpdate(self._forget_removed(session_id, state, working)))

    def _forget_removed(self, session_id: str, state: _SessionState, working: _Working) -> SessionRecord:
        """Drop what the session keeps of removed nodes; the session as stored now (a copy)."""
        for node_id in working.removed_nodes:
            state.acks.pop(node_id, None)
            state.last_view.pop(node_id, None)
            state.last_view_acks.pop(node_id, None)
            state.node_errors.pop(node_id, None)
            state.preview_subscribers.pop(node_id, None)
        return self._store.sessions()[session_id].copy()

    # ---- tunes

    async def _tunenode(self, connection: Connection, action: envelope.TuneNode, cid: str | None) -> envelope.Response | None:
        tune = _Tune(action, pointer.join("/payload/message", action.variant))
        stamps = [(action.node_id, action.stamp)] if action.stamp is not None else []
        _check_new_senders(connection, stamps, tune.body_path)
        for _, stamp in stamps:
            connection.senders.add(stamp.sender)
        try:
            _, state = self._session(action.session_id)
        except RemoteProtocolError as error:
            raise _Refusal(error, stamps) from None
        async with state.lock:
            record, _ = self._session(action.session_id)
            try:
                node = self._tuned_node(record.nodes, state, tune, None)
            except RemoteProtocolError as error:
                self._refuse_stamps(connection, action.session_id, stamps)
                raise _Refusal(error, stamps) from None
            seq = await self._store.set_params(action.session_id, node.node_id, node.params, wait_durable=False)
            if action.stamp is not None:
                state.book(node.node_id).record(action.stamp)
            state.engine.submit(api.ParamsUpdate(node.node_id, node.params, action.stamp))
            self._publish_params(action.session_id, state, node.node_id, node.params, seq, action.stamp)
        if not action.sync:
            return None
        await self._store.flush()  # answered once the change is committed
        return envelope.success(cid)

    def _tuned_node(
        self, nodes: Mapping[str, NodeRecord], state: _SessionState, tune: _Tune, batch_books: dict[str, AckBook] | None
    ) -> NodeRecord:
        """The node with the params a tune results in; raises without changing anything.

        ``batch_books`` (in a batch) holds, per node, the stamps taken earlier in the same batch (not yet in
        the node's book).
        """
        action = tune.action
        node = nodes.get(action.node_id)
        if node is None:
            node_path = pointer.join(tune.body_path.rsplit("/message/", 1)[0], "node_id")
            raise _not_found(f"no node {action.node_id!r} in this session", node_path)
        if action.stamp is not None:
            # S2: a rev at or below the node's ack, or at or below one taken earlier in this batch, is a replay.
            # The batch's own book first: when it has the sender, its rev is the higher floor, the one to name.
            taken = batch_books.setdefault(action.node_id, AckBook()) if batch_books is not None else None
            if taken is not None:
                taken.check(action.stamp, path=tune.body_path)
            state.book(action.node_id).check(action.stamp, path=tune.body_path)
            if taken is not None:
                taken.record(action.stamp)
        candidate = action.params if action.mode == envelope.UPDATE else causal.merge_patch(node.params, action.params)
        try:
            validated = node_params.validate(node.kind, candidate)
        except RemoteProtocolError as error:
            raise envelope.prefixed_error(error, tune.body_path) from None
        return NodeRecord(node.node_id, node.kind, validated, node.seq + 1)

    def _refuse_stamps(self, connection: Connection, session_id: Any, stamps: Sequence[tuple[str, Stamp]]) -> None:
        """Rule S6: a refused stamped message still counts as processed (for nodes that exist)."""
        state = self._sessions.get(session_id) if isinstance(session_id, str) else None
        record = self._store.sessions().get(session_id) if isinstance(session_id, str) else None
        for node_id, stamp in stamps:
            connection.senders.add(stamp.sender)
            if state is not None and record is not None and node_id in record.nodes:
                state.book(node_id).refuse(stamp)

    def _publish_params(
        self, session_id: str, state: _SessionState, node_id: str, params: Mapping[str, Any], seq: int, stamp: Stamp | None
    ) -> None:
        event = envelope.node_params_changed(session_id, node_id, params, stamp, state.book(node_id).as_dict(), seq)
        self._publish(event, (session_id, node_id, causal.PARAMS_CHANNEL))

    # ---- applybatch: validate everything on a working copy, then one transaction and one frame

    async def _applybatch(self, connection: Connection, action: envelope.ApplyBatch, cid: str | None) -> envelope.Response:
        session_id = action.session_id
        stamps = [(op.node_id, op.stamp) for op in action.operations if isinstance(op, envelope.TuneNode) and op.stamp]
        _check_new_senders(connection, stamps, "/payload/operations")
        for _, stamp in stamps:
            connection.senders.add(stamp.sender)
        try:
            _, state = self._session(session_id)
        except RemoteProtocolError as error:
            raise _Refusal(error, stamps) from None
        async with state.lock:
            record, _ = self._session(session_id)
            working = _Working(record)
            events: list[envelope.Event] = []
            tuned: list[api.ParamsUpdate] = []
            batch_books: dict[str, AckBook] = {}
            try:
                for index, op in enumerate(action.operations):
                    path = pointer.join("/payload/operations", index)
                    if isinstance(op, envelope.TuneNode):
                        node = self._tuned_node(
                            working.nodes, state, _Tune(op, pointer.join(path, "message", op.variant)), batch_books
                        )
                        working.set_params(node.node_id, node.params)
                        tuned.append(api.ParamsUpdate(node.node_id, node.params, op.stamp))
                    else:
                        events += working.apply(op, path)
            except RemoteProtocolError as error:
                self._refuse_stamps(connection, session_id, stamps)  # S6: every stamp of a refused batch
                raise _Refusal(error, stamps) from None
            await self._store.apply_atomically(working.ops, wait_durable=False)
            for update in tuned:
                if update.stamp is not None:
                    state.book(update.node_id).record(update.stamp)
            # One command: the structure change and every tune land in the same frame.
            topology = self._forget_removed(session_id, state, working) if working.structure_changed else None
            if tuned or topology is not None:
                state.engine.submit(api.BatchUpdate(tuple(tuned), topology))
            for event in events:
                self._publish(event)
            stored = self._store.sessions()[session_id]
            last_stamp = {update.node_id: update.stamp for update in tuned}
            for node_id, node_stamp in last_stamp.items():
                if node_id in stored.nodes:
                    node = stored.nodes[node_id]
                    self._publish_params(session_id, state, node_id, node.params, node.seq, node_stamp)
        await self._store.flush()  # one transaction (apply_atomically), answered once committed
        return envelope.batch_applied(cid, session_id, len(action.operations))

    # ------------------------------------------------------------------ output

    def _publish(self, event: envelope.Event, coalesce_key: Any = None) -> None:
        # Encoded only if sent: a held event is often replaced by a newer one first. The event is a
        # snapshot (its payload dicts are made for it, and stored params are never changed in place).
        self._hub.publish(Broadcast.deferred(functools.partial(envelope.serialize, event)), coalesce_key)

    @staticmethod
    def _send(connection: Connection, message: envelope.Response | envelope.Event) -> None:
        connection.send(envelope.serialize(message))


def _check_new_senders(connection: Connection, stamps: Sequence[tuple[str, Stamp]], path: str) -> None:
    """Bound the acks maps: a client makes one nonce per connection, so a few per connection is plenty."""
    new = {stamp.sender for _, stamp in stamps} - connection.senders
    if new and len(connection.senders) + len(new) > MAX_SENDERS_PER_CONNECTION:
        sender_path = pointer.join(path, causal.SENDER_KEY)
        raise RemoteProtocolError(
            ErrorCode.BAD_ENVELOPE,
            f"{sender_path}: more than {MAX_SENDERS_PER_CONNECTION} distinct _sender values on one connection",
            sender_path,
        )


def _refusal_response(refusal: _Refusal, correlation_id: str | None) -> envelope.Response:
    if not refusal.stamps:
        return envelope.error_response(refusal.error, correlation_id)
    node_id, stamp = refusal.stamps[-1]
    refused = refusal.stamps if len(refusal.stamps) > 1 else ()
    return envelope.error_response(refusal.error, correlation_id, stamp, node_id=node_id, refused=refused)


def _preview_fields(image: api.PreviewImage) -> dict[str, Any]:
    """The wire fields of a thumbnail."""
    return {
        "jpeg": image.jpeg,
        "width": image.width,
        "height": image.height,
        "frame_number": image.frame_number,
        "media_time": round(image.media_time, 6),
        "timestamp": image.timestamp,
    }


class _Working:
    """A working copy of one session's structure: changes are checked here, then committed as store ops."""

    def __init__(self, record: SessionRecord) -> None:
        self.session_id = record.session_id
        self.nodes: dict[str, NodeRecord] = dict(record.nodes)
        self.connections: list[ConnectionRecord] = list(record.connections)
        self.ops: list[StoreOp] = []
        self.removed_nodes: set[str] = set()
        self.structure_changed = False

    def apply(self, action: Any, path: str) -> list[envelope.Event]:
        if isinstance(action, envelope.AddNode):
            return self.add_node(action.node_id, action.kind, dict(action.params), path)
        if isinstance(action, envelope.RemoveNode):
            return self.remove_node(action.node_id, path)
        conn = ConnectionRecord(action.from_node, action.from_pin, action.to_node, action.to_pin)
        if isinstance(action, envelope.Connect):
            return self.connect(conn, path)
        if isinstance(action, envelope.Disconnect):
            return self.disconnect(conn, path)
        raise LocalProtocolError(f"not a structure change: {type(action).__name__}")

    def set_params(self, node_id: str, params: dict[str, Any]) -> None:
        node = self.nodes[node_id]
        self.nodes[node_id] = NodeRecord(node_id, node.kind, params, node.seq + 1)
        self.ops.append(SetParams(self.session_id, node_id, params))

    def add_node(self, node_id: str, kind: str, params: dict[str, Any], path: str) -> list[envelope.Event]:
        """``params`` are validated already (the envelope validates addnode against its kind)."""
        if node_id in self.nodes:
            raise RemoteProtocolError(ErrorCode.CONFLICT, f"{path}/node_id: node {node_id!r} exists already", path + "/node_id")
        if len(self.nodes) >= node_params.MAX_NODES:
            raise RemoteProtocolError(
                ErrorCode.INVALID_PARAMS, f"{path}: a session has at most {node_params.MAX_NODES} nodes", path
            )
        node = NodeRecord(node_id, kind, params, 0)
        self.nodes[node_id] = node
        self.removed_nodes.discard(node_id)
        self.ops.append(PutNode(self.session_id, node))
        self.structure_changed = True
        return [envelope.node_added(self.session_id, node_id, kind, params)]

    def remove_node(self, node_id: str, path: str) -> list[envelope.Event]:
        if node_id not in self.nodes:
            raise _not_found(f"no node {node_id!r} in session {self.session_id!r}", path + "/node_id")
        events: list[envelope.Event] = []
        for conn in [c for c in self.connections if node_id in (c.from_node, c.to_node)]:
            self.connections.remove(conn)
            events.append(envelope.connection_removed(self.session_id, **conn.to_json()))
        del self.nodes[node_id]
        self.removed_nodes.add(node_id)
        self.ops.append(RemoveNode(self.session_id, node_id))
        self.structure_changed = True
        events.append(envelope.node_removed(self.session_id, node_id))
        return events

    def connect(self, conn: ConnectionRecord, path: str) -> list[envelope.Event]:
        if conn in self.connections:
            raise RemoteProtocolError(ErrorCode.CONFLICT, f"{path}: this connection exists already", path)
        candidate = {
            "nodes": {n.node_id: {"kind": n.kind, "params": n.params} for n in self.nodes.values()},
            "connections": [c.to_json() for c in self.connections] + [conn.to_json()],
        }
        own = f"/connections/{len(self.connections)}"
        try:
            node_params.validate_pipeline(candidate)
        except RemoteProtocolError as error:
            # Report the new connection's fields at their place in the request.
            moved = [
                FieldError(path + e.path[len(own) :], e.message)
                if e.path == own or e.path.startswith(own + "/")
                else FieldError(path, e.message)
                for e in error.errors
            ]
            raise RemoteProtocolError.from_field_errors(error.code, moved) from None
        self.connections.append(conn)
        self.ops.append(AddConnection(self.session_id, conn))
        self.structure_changed = True
        return [envelope.connection_added(self.session_id, **conn.to_json())]

    def disconnect(self, conn: ConnectionRecord, path: str) -> list[envelope.Event]:
        if conn not in self.connections:
            raise _not_found("no such connection in this session", path)
        self.connections.remove(conn)
        self.ops.append(RemoveConnection(self.session_id, conn))
        self.structure_changed = True
        return [envelope.connection_removed(self.session_id, **conn.to_json())]
