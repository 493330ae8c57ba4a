"""The session logic: every action of PROTOCOL.md section 3, on the trio thread.

Order of work for a change (PROTOCOL.md section 3, steps 1-6): take the stamp,
strip every ``_`` key, compute the resulting params (replace or RFC 7396 merge
patch against the durable params), validate them whole, store them, hand the
full validated params plus the stamp to the session's render loop, and tell
every connection (``nodeparamschanged``). Anything refused before the store
step changes nothing.

Ordering (rule S1): a per-session lock covers everything from reading the
durable params to publishing the event, so two connections tuning the same
node cannot interleave a read and a write; the wait for the COMMIT
(``tunenode``) happens after the lock is released, so a slow fsync never holds
up other edits, and the reply still only goes out once the change is durable.

Acks: the params channel keeps one :class:`AckBook` per node here (rules S2,
S3, S5, S6); the view channel's acks live in the render loop.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from compositord.daemon import wire
from compositord.daemon.connection import Connection
from compositord.daemon.hub import Hub
from compositord.daemon.model import ConnectionRecord, NodeRecord, SessionRecord
from compositord.daemon.store import AddConnection, PutNode, RemoveConnection, RemoveNode, SetParams, Store, StoreOp
from compositord.protocol import causal, params as node_params, pointer
from compositord.protocol.causal import AckBook, Stamp
from compositord.protocol.errors import ErrorCode, FieldError, LocalProtocolError, RemoteProtocolError

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1


class RenderLoopLike(Protocol):
    """What the session logic needs of ``daemon.render_loop.RenderLoop``."""

    def start(self) -> None: ...
    async def wait_first_frame(self) -> None: ...
    def submit_params(self, node_id: str, params: dict[str, Any], stamp: Stamp | None) -> None: ...
    def submit_batch(self, updates: list[tuple[str, dict[str, Any], Stamp | None]]) -> None: ...
    def submit_topology(self, session: SessionRecord) -> None: ...
    def forget_sender(self, sender: str) -> None: ...
    def last_progress(self) -> float: ...
    def stop(self, timeout: float = 5.0) -> None: ...


# Makes a render loop for a session; the service passes its own callbacks.
RenderLoopFactory = Callable[[SessionRecord, "SessionService"], RenderLoopLike]


def _prefixed(error: RemoteProtocolError, prefix: str) -> RemoteProtocolError:
    """The same error with every path moved under ``prefix`` (where the document sat in the request)."""
    if error.errors:
        return RemoteProtocolError.from_field_errors(
            error.code, [FieldError(prefix + e.path, e.message) for e in error.errors]
        )
    path = prefix + (error.path or "")
    return RemoteProtocolError(error.code, f"{path or '/'}: {error.message}" if error.path is None else error.message.replace(error.path, path, 1), path)


def _not_found(what: str, path: str) -> RemoteProtocolError:
    return RemoteProtocolError(ErrorCode.NOT_FOUND, f"{path}: {what}", path)


@dataclass
class _SessionState:
    """What the service keeps per session besides the store's records."""

    loop: RenderLoopLike
    lock: trio.Lock = field(default_factory=trio.Lock)
    acks: dict[str, AckBook] = field(default_factory=dict)  # params channel, per node
    last_view: dict[str, dict[str, Any]] = field(default_factory=dict)  # per node, without "_" keys

    def book(self, node_id: str) -> AckBook:
        found = self.acks.get(node_id)
        if found is None:
            found = self.acks[node_id] = AckBook()
        return found


@dataclass
class _Refusal(Exception):
    """A refused request, with the stamps it carried (rule S6: each counts as processed)."""

    error: RemoteProtocolError
    stamps: list[tuple[str, Stamp]] = field(default_factory=list)  # (node_id, stamp)


class SessionService:
    """The dispatcher of every connection: parses requests, runs actions, publishes events."""

    def __init__(self, store: Store, hub: Hub, loop_factory: RenderLoopFactory) -> None:
        self._store = store
        self._hub = hub
        self._loop_factory = loop_factory
        self._sessions: dict[str, _SessionState] = {}
        self._structure_lock = trio.Lock()  # createsession / destroysession

    # ------------------------------------------------------------------ lifecycle

    @property
    def render_loops(self) -> dict[str, RenderLoopLike]:
        return {session_id: state.loop for session_id, state in self._sessions.items()}

    async def open_session(self, record: SessionRecord) -> None:
        """Start the render loop of a session that is in the store; returns after its first frame."""
        loop = self._loop_factory(record.copy(), self)
        self._sessions[record.session_id] = _SessionState(loop)
        loop.start()
        await loop.wait_first_frame()

    async def stop_all(self, timeout: float) -> None:
        """Stop every render loop (each releases its GL objects in its own thread)."""
        states = list(self._sessions.values())
        self._sessions.clear()
        for state in states:
            await trio.to_thread.run_sync(state.loop.stop, timeout)

    # ------------------------------------------------------------------ callbacks from render loops (trio thread)

    def on_view_data(self, emission: Any) -> None:
        state = self._sessions.get(emission.session_id)
        if state is None:
            return  # a late emission of a destroyed session
        layout = causal.strip_private(dict(emission.layout))
        state.last_view[emission.node_id] = layout
        data: dict[str, Any] = dict(layout)
        if emission.stamp is not None:
            data.update(emission.stamp.to_json())
        data[causal.ACKS_KEY] = dict(emission.acks)
        data[causal.SEQ_KEY] = emission.seq
        self._publish(
            {
                "event": "nodeviewdataupdated",
                "session_id": emission.session_id,
                "node_id": emission.node_id,
                "data": data,
                "timestamp": emission.timestamp,
            },
            (emission.session_id, emission.node_id, causal.VIEW_CHANNEL),
        )

    def on_stats(self, emission: Any) -> None:
        if emission.session_id not in self._sessions:
            return
        self._publish(
            {
                "event": "nodestatsupdated",
                "session_id": emission.session_id,
                "node_id": emission.node_id,
                "stats": dict(emission.stats),
            },
            (emission.session_id, emission.node_id, "stats"),
        )

    def on_node_error(self, session_id: str, node_id: str, message: str | None) -> None:
        if message:
            log.warning("session %s node %s: %s", session_id, node_id, message)

    # ------------------------------------------------------------------ the Dispatcher protocol

    async def handle_text(self, connection: Connection, text: str) -> None:
        correlation_id: str | None = None
        try:
            request = wire.parse_request(text)
            correlation_id = request.correlation_id
            result = await self._run_action(connection, request)
        except _Refusal as refusal:
            self._answer_refusal(connection, refusal, correlation_id, always=True)
            return
        except RemoteProtocolError as error:
            if correlation_id is None:
                correlation_id = wire.correlation_id_of(text)
            connection.send(wire.encode_response(error.to_payload(), correlation_id))
            return
        except (LocalProtocolError, ValueError, KeyError, TypeError) as exc:
            # A bug on this side must not take the connection down: the client gets `internal`.
            log.exception("internal error handling a request")
            error = RemoteProtocolError(ErrorCode.INTERNAL, f"internal error: {type(exc).__name__}")
            connection.send(wire.encode_response(error.to_payload(), correlation_id))
            return
        if result is not None:
            connection.send(wire.encode_response(result, correlation_id))

    def handle_binary(self, connection: Connection, data: bytes) -> None:
        error = RemoteProtocolError(
            ErrorCode.BAD_ENVELOPE,
            f"binary message of {len(data)} bytes refused: no node of this daemon takes pushed frames",
        )
        connection.send(wire.encode_response(error.to_payload(), None))

    def refuse(self, connection: Connection, error: RemoteProtocolError, correlation_id: str | None) -> None:
        connection.send(wire.encode_response(error.to_payload(), correlation_id))

    def connection_closed(self, connection: Connection) -> None:
        self._hub.unsubscribe(connection)
        for sender in connection.senders:  # rule S5, both channels
            for state in self._sessions.values():
                for book in state.acks.values():
                    book.forget(sender)
                state.loop.forget_sender(sender)

    def connection_opened(self, connection: Connection) -> None:
        self._hub.subscribe(connection)

    # ------------------------------------------------------------------ actions

    async def _run_action(self, connection: Connection, request: wire.Request) -> dict[str, Any] | None:
        action = request.action
        handler = self._handlers().get(action.name)
        if handler is None:  # wire already refused unknown names; this is our own gap
            raise LocalProtocolError(f"no handler for action {action.name!r}")
        return await handler(connection, request)

    def _handlers(self) -> dict[str, Callable[[Connection, wire.Request], Awaitable[dict[str, Any] | None]]]:
        return {
            "getpipeline": self._getpipeline,
            "listsessions": self._listsessions,
            "createsession": self._createsession,
            "destroysession": self._destroysession,
            "addnode": self._addnode,
            "removenode": self._removenode,
            "connect": self._connect,
            "disconnect": self._disconnect,
            "tunenode": self._tunenode,
            "tunenodeasync": self._tunenode,
            "applybatch": self._applybatch,
        }

    def _session(self, session_id: str) -> tuple[SessionRecord, _SessionState]:
        record = self._store.sessions().get(session_id)
        state = self._sessions.get(session_id)
        if record is None or state is None:
            raise _not_found(f"no session {session_id!r}", "/payload/session_id")
        return record, state

    async def _getpipeline(self, connection: Connection, request: wire.Request) -> dict[str, Any]:
        record, state = self._session(request.action.fields["session_id"])
        pipeline = record.to_pipeline()
        return {
            "action": "pipeline",
            "session_id": record.session_id,
            "name": record.name,
            "nodes": pipeline["nodes"],
            "connections": pipeline["connections"],
            "view_data": {node_id: dict(view) for node_id, view in state.last_view.items() if node_id in record.nodes},
            "seqs": {node_id: node.seq for node_id, node in record.nodes.items()},
            "protocol_version": PROTOCOL_VERSION,
        }

    async def _listsessions(self, connection: Connection, request: wire.Request) -> dict[str, Any]:
        sessions = self._store.sessions()
        return {
            "action": "sessionslisted",
            "sessions": [
                {"session_id": s.session_id, "name": s.name, "nodes": len(s.nodes)}
                for s in sessions.values()
                if s.session_id in self._sessions
            ],
        }

    async def _createsession(self, connection: Connection, request: wire.Request) -> dict[str, Any]:
        fields = request.action.fields
        name = fields["name"]
        try:
            pipeline = node_params.validate_pipeline(fields["pipeline"])
        except RemoteProtocolError as error:
            raise _prefixed(error, "/payload/pipeline") from None
        session_id = str(uuid.uuid4())
        record = SessionRecord.from_pipeline(session_id, name, pipeline)
        async with self._structure_lock:
            await self._store.create_session(record)
            stored = self._store.sessions()[session_id]
            try:
                await self.open_session(stored)
            except BaseException:
                self._sessions.pop(session_id, None)
                with trio.CancelScope(shield=True):
                    await self._store.destroy_session(session_id)
                raise
        self._publish({"event": "sessioncreated", "session_id": session_id, "name": name}, None)
        return {"action": "sessioncreated", "session_id": session_id, "name": name}

    async def _destroysession(self, connection: Connection, request: wire.Request) -> dict[str, Any]:
        session_id = request.action.fields["session_id"]
        async with self._structure_lock:
            _, state = self._session(session_id)
            async with state.lock:
                del self._sessions[session_id]
                await self._store.destroy_session(session_id)
            await trio.to_thread.run_sync(state.loop.stop)
        self._publish({"event": "sessiondestroyed", "session_id": session_id}, None)
        return {"action": "sessiondestroyed", "session_id": session_id}

    # ---- structure: addnode, removenode, connect, disconnect (each one store transaction)

    async def _addnode(self, connection: Connection, request: wire.Request) -> dict[str, Any]:
        fields = request.action.fields
        record, state = self._session(fields["session_id"])
        async with state.lock:
            record, _ = self._session(fields["session_id"])
            working = _Working(record)
            events = working.add_node(fields["node_id"], fields["kind"], fields.get("params") or {}, "/payload")
            await self._commit_structure(record.session_id, state, working, events)
        return {"action": "success"}

    async def _removenode(self, connection: Connection, request: wire.Request) -> dict[str, Any]:
        fields = request.action.fields
        record, state = self._session(fields["session_id"])
        async with state.lock:
            record, _ = self._session(fields["session_id"])
            working = _Working(record)
            events = working.remove_node(fields["node_id"], "/payload")
            await self._commit_structure(record.session_id, state, working, events)
        return {"action": "success"}

    async def _connect(self, connection: Connection, request: wire.Request) -> dict[str, Any]:
        return await self._connection_change(request, add=True)

    async def _disconnect(self, connection: Connection, request: wire.Request) -> dict[str, Any]:
        return await self._connection_change(request, add=False)

    async def _connection_change(self, request: wire.Request, *, add: bool) -> dict[str, Any]:
        fields = request.action.fields
        record, state = self._session(fields["session_id"])
        conn = ConnectionRecord(fields["from_node"], fields["from_pin"], fields["to_node"], fields["to_pin"])
        async with state.lock:
            record, _ = self._session(fields["session_id"])
            working = _Working(record)
            events = working.connect(conn, "/payload") if add else working.disconnect(conn, "/payload")
            await self._commit_structure(record.session_id, state, working, events)
        return {"action": "success"}

    async def _commit_structure(self, session_id: str, state: _SessionState, working: _Working, events: list[dict[str, Any]]) -> None:
        await self._store.apply_atomically(working.ops, wait_durable=True)
        self._after_structure_change(session_id, state, working)
        for event in events:
            self._publish(event, None)

    def _after_structure_change(self, session_id: str, state: _SessionState, working: _Working) -> None:
        record = self._store.sessions()[session_id]
        for node_id in working.removed_nodes:
            state.acks.pop(node_id, None)
            state.last_view.pop(node_id, None)
        state.loop.submit_topology(record.copy())

    # ---- tunes

    async def _tunenode(self, connection: Connection, request: wire.Request) -> dict[str, Any] | None:
        action = request.action
        tune = wire.tune_of(action)
        is_async = action.name == "tunenodeasync"
        if tune.stamp is not None:
            connection.senders.add(tune.stamp.sender)
        session_id = action.fields["session_id"]
        try:
            record, state = self._session(session_id)
        except RemoteProtocolError as error:
            raise _Refusal(error, [(tune.node_id, tune.stamp)] if tune.stamp else []) from None
        async with state.lock:
            record, _ = self._session(session_id)
            try:
                node_id, new_params = self._resolve_tune(record, state, tune)
            except RemoteProtocolError as error:
                if tune.stamp is not None and tune.node_id in record.nodes:
                    state.book(tune.node_id).refuse(tune.stamp)  # S6
                raise _Refusal(error, [(tune.node_id, tune.stamp)] if tune.stamp else []) from None
            seq = await self._store.set_params(session_id, node_id, new_params, wait_durable=False)
            if tune.stamp is not None:
                state.book(node_id).record(tune.stamp)
            state.loop.submit_params(node_id, new_params, tune.stamp)
            self._publish_params(session_id, state, node_id, new_params, seq, tune.stamp)
        if is_async:
            return None
        await self._store.flush()  # answered once the change is committed
        return {"action": "success"}

    def _resolve_tune(self, record: SessionRecord, state: _SessionState, tune: wire.Tune) -> tuple[str, dict[str, Any]]:
        """The validated params a tune results in; raises without changing anything."""
        node = record.nodes.get(tune.node_id)
        if node is None:
            raise _not_found(f"no node {tune.node_id!r} in session {record.session_id!r}", "/payload/node_id")
        if tune.stamp is not None:
            state.book(tune.node_id).check(tune.stamp, path=tune.body_path)
        if tune.replace:
            candidate = tune.body
        else:
            candidate = causal.merge_patch(node.params, tune.body)
        try:
            validated = node_params.validate(node.kind, candidate)
        except RemoteProtocolError as error:
            raise _prefixed(error, tune.body_path) from None
        return node.node_id, validated

    def _publish_params(
        self, session_id: str, state: _SessionState, node_id: str, params: Mapping[str, Any], seq: int, stamp: Stamp | None
    ) -> None:
        body: dict[str, Any] = dict(params)
        if stamp is not None:
            body.update(stamp.to_json())
        body[causal.ACKS_KEY] = state.book(node_id).as_dict()
        body[causal.SEQ_KEY] = seq
        self._publish(
            {"event": "nodeparamschanged", "session_id": session_id, "node_id": node_id, "params": body},
            (session_id, node_id, causal.PARAMS_CHANNEL),
        )

    # ---- applybatch: validate everything on a working copy, then one transaction and one frame

    async def _applybatch(self, connection: Connection, request: wire.Request) -> dict[str, Any]:
        fields = request.action.fields
        session_id = fields["session_id"]
        operations = wire.batch_operations_of(request.action)
        stamps = [(op.tune.node_id, op.tune.stamp) for op in operations if op.tune is not None and op.tune.stamp]
        for _, stamp in stamps:
            connection.senders.add(stamp.sender)
        try:
            record, state = self._session(session_id)
        except RemoteProtocolError as error:
            raise _Refusal(error, stamps) from None
        async with state.lock:
            record, _ = self._session(session_id)
            working = _Working(record)
            events: list[dict[str, Any]] = []
            tuned: list[tuple[str, dict[str, Any], Stamp | None]] = []
            try:
                seen_stamps: dict[tuple[str, str], int] = {}
                for op in operations:
                    if op.tune is not None:
                        tuned.append(self._working_tune(working, state, op.tune, seen_stamps))
                    elif op.name == "addnode":
                        events += working.add_node(op.fields["node_id"], op.fields["kind"], op.fields.get("params") or {}, op.path)
                    elif op.name == "removenode":
                        events += working.remove_node(op.fields["node_id"], op.path)
                    elif op.name in ("connect", "disconnect"):
                        conn = ConnectionRecord(op.fields["from_node"], op.fields["from_pin"], op.fields["to_node"], op.fields["to_pin"])
                        events += working.connect(conn, op.path) if op.name == "connect" else working.disconnect(conn, op.path)
                    else:
                        raise RemoteProtocolError(ErrorCode.UNKNOWN_ACTION, f"{op.path}/action: {op.name!r} cannot be batched", op.path + "/action")
            except RemoteProtocolError as error:
                for node_id, stamp in stamps:
                    if node_id in record.nodes:
                        state.book(node_id).refuse(stamp)  # S6: every stamp of a refused batch counts as processed
                raise _Refusal(error, stamps) from None
            seqs = await self._store.apply_atomically(working.ops, wait_durable=True)
            # The final params per tuned node (a node tuned twice in a batch shows its last state).
            final_params: dict[str, tuple[dict[str, Any], Stamp | None]] = {}
            for node_id, params, stamp in tuned:
                if stamp is not None:
                    state.book(node_id).record(stamp)
                final_params[node_id] = (params, stamp)
            if working.structure_changed:
                self._after_structure_change(session_id, state, working)
            state.loop.submit_batch(tuned)
            for event in events:
                self._publish(event, None)
            new_record = self._store.sessions()[session_id]
            for node_id, (params, stamp) in final_params.items():
                if node_id in new_record.nodes:
                    self._publish_params(session_id, state, node_id, params, new_record.nodes[node_id].seq, stamp)
        del seqs
        return {"action": "batchapplied", "session_id": session_id, "applied": len(operations)}

    def _working_tune(
        self, working: _Working, state: _SessionState, tune: wire.Tune, seen_stamps: dict[tuple[str, str], int]
    ) -> tuple[str, dict[str, Any], Stamp | None]:
        node = working.nodes.get(tune.node_id)
        if node is None:
            raise _not_found(f"no node {tune.node_id!r} in session {working.session_id!r}", tune.path + "/node_id")
        if tune.stamp is not None:
            key = (tune.node_id, tune.stamp.sender)
            floor = max(state.book(tune.node_id).ack_of(tune.stamp.sender), seen_stamps.get(key, 0))
            if tune.stamp.rev <= floor:
                rev_path = tune.body_path + "/_rev"
                raise RemoteProtocolError(
                    ErrorCode.CONFLICT, f"{rev_path}: _rev {tune.stamp.rev} already processed for this sender (ack {floor})", rev_path
                )
            seen_stamps[key] = tune.stamp.rev
        candidate = tune.body if tune.replace else causal.merge_patch(node.params, tune.body)
        try:
            validated = node_params.validate(node.kind, candidate)
        except RemoteProtocolError as error:
            raise _prefixed(error, tune.body_path) from None
        working.set_params(tune.node_id, validated)
        return tune.node_id, validated, tune.stamp

    # ------------------------------------------------------------------ output

    def _publish(self, payload: dict[str, Any], coalesce_key: Any) -> None:
        self._hub.publish(wire.encode_event(payload), coalesce_key)

    def _answer_refusal(self, connection: Connection, refusal: _Refusal, correlation_id: str | None, *, always: bool) -> None:
        payload = refusal.error.to_payload()
        if refusal.stamps:
            node_id, stamp = refusal.stamps[-1]
            payload.update(stamp.to_json())
            payload["node_id"] = node_id
            if len(refusal.stamps) > 1:
                payload["refused"] = [{"node_id": n, **s.to_json()} for n, s in refusal.stamps]
        connection.send(wire.encode_response(payload, correlation_id))


class _Working:
    """A working copy of one session's structure: changes are checked here, then committed as store ops."""

    def __init__(self, record: SessionRecord) -> None:
        self.session_id = record.session_id
        self.nodes: dict[str, NodeRecord] = {
            node_id: NodeRecord(node.node_id, node.kind, node.params, node.seq) for node_id, node in record.nodes.items()
        }
        self.connections: list[ConnectionRecord] = list(record.connections)
        self.ops: list[StoreOp] = []
        self.removed_nodes: set[str] = set()
        self.structure_changed = False

    def set_params(self, node_id: str, params: dict[str, Any]) -> None:
        node = self.nodes[node_id]
        self.nodes[node_id] = NodeRecord(node_id, node.kind, params, node.seq + 1)
        self.ops.append(SetParams(self.session_id, node_id, params))

    def add_node(self, node_id: Any, kind: Any, params: Any, path: str) -> list[dict[str, Any]]:
        if not isinstance(node_id, str) or not re.fullmatch(node_params.NODE_ID_PATTERN, node_id):
            raise RemoteProtocolError(
                ErrorCode.INVALID_PARAMS, f"{path}/node_id: must be 1-64 letters, digits, '_', '.', '-' (not first)", path + "/node_id"
            )
        if node_id in self.nodes:
            raise RemoteProtocolError(ErrorCode.CONFLICT, f"{path}/node_id: node {node_id!r} exists already", path + "/node_id")
        if len(self.nodes) >= node_params.MAX_NODES:
            raise RemoteProtocolError(ErrorCode.INVALID_PARAMS, f"{path}: a session has at most {node_params.MAX_NODES} nodes", path)
        if not isinstance(kind, str) or kind not in node_params.KINDS:
            raise RemoteProtocolError(ErrorCode.INVALID_PARAMS, f"{path}/kind: unknown node kind {kind!r}", path + "/kind")
        try:
            validated = node_params.validate(kind, causal.strip_private(params))
        except RemoteProtocolError as error:
            raise _prefixed(error, path + "/params") from None
        node = NodeRecord(node_id, kind, validated, 0)
        self.nodes[node_id] = node
        self.removed_nodes.discard(node_id)
        self.ops.append(PutNode(self.session_id, node))
        self.structure_changed = True
        return [{"event": "nodeadded", "session_id": self.session_id, "node_id": node_id, "kind": kind, "params": validated}]

    def remove_node(self, node_id: Any, path: str) -> list[dict[str, Any]]:
        if node_id not in self.nodes:
            raise _not_found(f"no node {node_id!r} in session {self.session_id!r}", path + "/node_id")
        events: list[dict[str, Any]] = []
        for conn in [c for c in self.connections if node_id in (c.from_node, c.to_node)]:
            self.connections.remove(conn)
            events.append({"event": "connectionremoved", "session_id": self.session_id, **conn.to_json()})
        del self.nodes[node_id]
        self.removed_nodes.add(node_id)
        self.ops.append(RemoveNode(self.session_id, node_id))
        self.structure_changed = True
        events.append({"event": "noderemoved", "session_id": self.session_id, "node_id": node_id})
        return events

    def connect(self, conn: ConnectionRecord, path: str) -> list[dict[str, Any]]:
        if conn in self.connections:
            raise RemoteProtocolError(ErrorCode.CONFLICT, f"{path}: this connection exists already", path)
        candidate = {
            "nodes": {n.node_id: {"kind": n.kind, "params": n.params} for n in self.nodes.values()},
            "connections": [c.to_json() for c in self.connections] + [conn.to_json()],
        }
        new_index = len(self.connections)
        try:
            node_params.validate_pipeline(candidate)
        except RemoteProtocolError as error:
            own = f"/connections/{new_index}"
            mine = [e for e in error.errors if e.path == own or e.path.startswith(own + "/")]
            if not mine:  # a cycle, or a problem the new connection causes elsewhere
                mine = [FieldError("", e.message) for e in error.errors]
            raise RemoteProtocolError.from_field_errors(
                error.code, [FieldError(path + e.path[len(own):] if e.path.startswith(own) else path, e.message) for e in mine]
            ) from None
        self.connections.append(conn)
        self.ops.append(AddConnection(self.session_id, conn))
        self.structure_changed = True
        return [{"event": "connectionadded", "session_id": self.session_id, **conn.to_json()}]

    def disconnect(self, conn: ConnectionRecord, path: str) -> list[dict[str, Any]]:
        if conn not in self.connections:
            raise _not_found("no such connection in this session", path)
        self.connections.remove(conn)
        self.ops.append(RemoveConnection(self.session_id, conn))
        self.structure_changed = True
        return [{"event": "connectionremoved", "session_id": self.session_id, **conn.to_json()}]
