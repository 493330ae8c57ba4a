"""Structure changes: create and destroy sessions; add, remove, connect and disconnect nodes.

Every change is checked on a :class:`Working` copy of the session first, then
committed as one store transaction, handed to the engine and published; a
refused change leaves nothing behind. ``applybatch`` (``tunes.py``) uses the
same working copy, so a batch that mixes tunes and structure is one
transaction and lands in one frame.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import trio

from compositord.daemon.engine import api
from compositord.daemon.sessions.budgets import pipeline_of
from compositord.daemon.sessions.inline_images import InlineImages
from compositord.daemon.sessions.live import LiveSession, LiveSessions
from compositord.daemon.sessions.refusals import not_found
from compositord.daemon.state.model import ConnectionRecord, NodeRecord, SessionRecord
from compositord.daemon.state.store import AddConnection, PutNode, RemoveConnection, RemoveNode, SetParams, StoreOp
from compositord.protocol import envelope, pointer
from compositord.protocol import params as node_params
from compositord.protocol.errors import ErrorCode, FieldError, LocalProtocolError, RemoteProtocolError

StructureAction = envelope.AddNode | envelope.RemoveNode | envelope.Connect | envelope.Disconnect


class Structure:
    """``createsession``, ``destroysession``, ``addnode``, ``removenode``, ``connect``, ``disconnect``."""

    def __init__(
        self, live: LiveSessions, open_session: Callable[[SessionRecord], Awaitable[None]], images: InlineImages
    ) -> None:
        self._live = live
        self._open_session = open_session
        self._images = images
        self._sessions_lock = trio.Lock()  # createsession / destroysession

    async def createsession(self, action: envelope.CreateSession, cid: str | None) -> envelope.Response:
        store = self._live.store
        session_id = str(uuid.uuid4())
        name = action.name if action.name is not None else session_id
        record = SessionRecord.from_pipeline(session_id, name, action.pipeline)
        await self._images.store(action.images, "/payload/pipeline")
        async with self._sessions_lock:
            cost = self._live.budgets.check_new(session_id, action.pipeline, base="/payload/pipeline", count_path="/payload")
            with self._live.budgets.reserve(session_id, cost):
                await store.create_session(record)
                try:
                    await self._open_session(store.sessions()[session_id])
                except BaseException:
                    # Its engine could not start: the session goes, engine and all (a supervised engine would
                    # otherwise be restarted for a session nobody was told exists).
                    removed = self._live.remove(session_id)
                    with trio.CancelScope(shield=True):
                        if removed is not None:
                            await trio.to_thread.run_sync(removed.engine.stop, 5.0)
                        await store.destroy_session(session_id)
                    raise
        live = self._live.get(session_id)
        created_at = live.created_at if live is not None else None
        self._live.publish(envelope.session_created_event(session_id, name, created_at))
        return envelope.session_created_response(cid, session_id, name, created_at)

    async def destroysession(self, action: envelope.DestroySession, cid: str | None) -> envelope.Response:
        session_id = action.session_id
        async with self._sessions_lock:
            if session_id in self._live.parked() and session_id in self._live.store.sessions():
                await self._live.store.destroy_session(session_id)  # never started: nothing else to stop
                self._live.unpark(session_id)
            else:
                _, live = self._live.lookup(session_id)
                async with live.lock:
                    self._live.remove(session_id)
                    try:
                        await self._live.store.destroy_session(session_id)
                    except BaseException:
                        self._live.restore(session_id, live)  # not stored (a full disk): it goes on running
                        raise
                    self._live.budgets.forget(session_id)
                await trio.to_thread.run_sync(live.engine.stop)
        self._live.publish(envelope.session_destroyed_event(session_id))
        return envelope.session_destroyed_response(cid, session_id)

    async def change(self, action: StructureAction, cid: str | None) -> envelope.Response:
        """One structure change: one store transaction, answered once committed."""
        _, live = self._live.lookup(action.session_id)
        async with live.lock:
            record, _ = self._live.lookup(action.session_id)  # it may have changed while we waited for the lock
            working = Working(record, self._live.context)
            events = working.apply(action, "/payload")
            cost = self._live.budgets.check(
                action.session_id,
                pipeline_of(working.nodes, working.connections),
                params_paths={action.node_id: "/payload/params"} if isinstance(action, envelope.AddNode) else {},
                request_path="/payload",
            )
            with self._live.budgets.reserve(action.session_id, cost):
                if isinstance(action, envelope.AddNode):
                    await self._images.store(action.images, "/payload/params")
                await self._live.store.apply_atomically(working.ops, wait_durable=False)
            live.engine.submit(api.TopologyUpdate(committed_topology(self._live, live, working)))
            for event in events:
                self._live.publish(event)
        await self._live.store.flush()  # the commit wait holds up no other edit
        return envelope.success(cid)


def check_inputs_kept(node: NodeRecord, connections: Iterable[ConnectionRecord], body_path: str) -> None:
    """Refuse params that would take away an input pin a connection feeds (``num_inputs`` lowered under it).

    A dangling connection would make the session's pipeline invalid (every later ``connect`` of the session
    validates it whole and would fail) and ``getpipeline`` would export a pipeline nobody can load. The
    client disconnects first (in the same ``applybatch``, before the tune, to land both in one frame).
    """
    pins = node_params.input_pins(node.kind, node.params)
    fed = [conn for conn in connections if conn.to_node == node.node_id and conn.to_pin not in pins]
    if not fed:
        return
    path = pointer.join(body_path, "num_inputs")
    named = ", ".join(f"{c.from_node}.{c.from_pin} -> {c.to_node}.{c.to_pin}" for c in fed)
    have = f"pins {pins[0]}..{pins[-1]}" if pins else "no input pins"
    raise RemoteProtocolError(
        ErrorCode.INVALID_PARAMS,
        f"{path}: {node.node_id!r} would have {have}, but the connection {named} feeds a pin it removes;"
        " disconnect first (before this tune in the same applybatch, to land both in one frame)",
        path,
    )


def committed_topology(sessions: LiveSessions, live: LiveSession, working: Working) -> SessionRecord:
    """After ``working`` was committed: forget what was kept of its removed nodes; the session as stored now (a copy)."""
    live.forget_nodes(working.removed_nodes)
    return sessions.store.sessions()[working.session_id].copy()


class Working:
    """A working copy of one session's structure: changes are checked here, then committed as store ops."""

    def __init__(self, record: SessionRecord, context: node_params.ValidationContext) -> None:
        self.session_id = record.session_id
        self.context = context  # what the operator allows (stream destinations)
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
            raise not_found(f"no node {node_id!r} in session {self.session_id!r}", path + "/node_id")
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
            node_params.validate_pipeline(candidate, context=self.context)
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
            raise not_found("no such connection in this session", path)
        self.connections.remove(conn)
        self.ops.append(RemoveConnection(self.session_id, conn))
        self.structure_changed = True
        return [envelope.connection_removed(self.session_id, **conn.to_json())]
