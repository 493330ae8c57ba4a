"""An in-process fake compositord control server, built only from protocol/ (envelope, params, causal, layout).

For client tests until the real daemon exists (the daemon issue replaces it in
end-to-end tests). It keeps sessions in memory and follows PROTOCOL.md where a
client can tell: handshake path and bearer token, every action, stamped tunes
with acks (S1-S3, S5, S6), ``nodeparamschanged`` with ``_sender``/``_rev``/
``_acks``/``_seq``, and for each compositor a simple layout as view data
(auto-PiP and aspect fit from :mod:`compositord.protocol.layout`), emitted
after every stamped update and unstamped when the server itself changed it
(S4). What it does not do: render, store durably, coalesce per frame, rate
limit. Every batch is applied all-or-nothing, atomic or not.

Use::

    async with trio.open_nursery() as nursery:
        server = await nursery.start(fake_server.serve)
        async with open_client(server.url) as client: ...

Test hooks: :meth:`FakeServer.drop_connections` (the network goes away),
``drop_before_next_tune`` (the next tune is lost in flight with its connection),
``drop_after_next_tune`` (the next tune is applied, then the connection drops
before its answer and events leave: the client cannot know it was applied),
:meth:`FakeServer.hold_requests` / ``release_requests`` (requests pile up
unread, so their echoes arrive after the client has moved on),
:meth:`FakeServer.hold_events` / ``release_events`` (events wait while
responses, refusals included, still leave at once: the daemon's pacing of
events to the frame end, docs/PROTOCOL.md section 4).
"""

from __future__ import annotations

import copy
import functools
import hmac
import itertools
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

from compositord.protocol import envelope, layout, pointer
from compositord.protocol import params as node_params
from compositord.protocol.causal import AckBook, Stamp, merge_patch
from compositord.protocol.envelope import (
    UPDATE,
    AddNode,
    ApplyBatch,
    Connect,
    CreateSession,
    DestroySession,
    Disconnect,
    GetPipeline,
    ListSessions,
    RemoveNode,
    Request,
    TuneNode,
)
from compositord.protocol.errors import ErrorCode, FieldError, RemoteProtocolError

DEFAULT_SESSION = "default"
DEFAULT_PIPELINE: dict[str, Any] = {
    "nodes": {
        "bars": {"kind": "video::colorbars", "params": {"width": 1280, "height": 720}},
        "pip": {"kind": "video::colorbars", "params": {"width": 640, "height": 480, "pattern": "ramp"}},
        "comp": {"kind": "video::compositor", "params": {"width": 1280, "height": 720, "num_inputs": 3}},
    },
    "connections": [{"from_node": "bars", "from_pin": "out", "to_node": "comp", "to_pin": "in_0"}],
}
OUTBOX_CAPACITY = 1024
CLOSE_POLICY = 1008
CLOSE_GOING_AWAY = 1001


def _prefixed(error: RemoteProtocolError, base: str) -> RemoteProtocolError:
    if error.errors:
        return RemoteProtocolError.from_field_errors(error.code, [FieldError(base + e.path, e.message) for e in error.errors])
    return RemoteProtocolError(error.code, error.message, base + (error.path or ""))


@dataclass
class FakeNode:
    kind: str
    params: dict[str, Any]
    params_acks: AckBook = field(default_factory=AckBook)
    view_acks: AckBook = field(default_factory=AckBook)
    params_seq: int = 0
    view_seq: int = 0
    layout: dict[str, Any] | None = None


@dataclass
class FakeSession:
    session_id: str
    name: str
    nodes: dict[str, FakeNode]
    connections: list[dict[str, str]]


class FakeConnection:
    """One client: a bounded outbox and one sender task; a client too slow to drain it is closed (1008)."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self._send, self._receive = trio.open_memory_channel[str](OUTBOX_CAPACITY)
        self.senders: set[str] = set()
        self.muted = False

    def send(self, message: envelope.Message) -> None:
        if self.muted:
            return
        try:
            self._send.send_nowait(envelope.serialize(message))
        except (trio.WouldBlock, trio.ClosedResourceError):
            self._send.close()

    async def send_loop(self) -> None:
        try:
            async with self._receive:
                async for text in self._receive:
                    await self.ws.send_message(text)
            await self.ws.aclose(CLOSE_POLICY, "too slow")
        except ConnectionClosed:
            pass


class _Draft:
    """A session's nodes and connections being changed by one request; committed only if every step passed."""

    def __init__(self, session: FakeSession) -> None:
        self.session = session
        self.nodes = {node_id: (node.kind, copy.deepcopy(node.params)) for node_id, node in session.nodes.items()}
        self.connections = [dict(c) for c in session.connections]
        self.stamps: list[tuple[str, Stamp]] = []
        self.tuned: list[str] = []
        self._acks: dict[str, AckBook] = {}

    def node(self, node_id: str, path: str) -> tuple[str, dict[str, Any]]:
        if node_id not in self.nodes:
            raise RemoteProtocolError(ErrorCode.NOT_FOUND, f"no node {node_id!r} in session {self.session.session_id!r}", path)
        return self.nodes[node_id]

    def tune(self, op: TuneNode, base: str) -> None:
        kind, current = self.node(op.node_id, pointer.join(base, "node_id"))
        body_path = pointer.join(base, "message", op.variant)
        if op.stamp is not None:
            book = self._acks.get(op.node_id)
            if book is None:
                book = self._acks[op.node_id] = AckBook()
                existing = self.session.nodes.get(op.node_id)
                for sender, rev in (existing.params_acks.as_dict() if existing else {}).items():
                    book.record(Stamp(sender, rev))
            book.check(op.stamp, path=body_path)
            book.record(op.stamp)
        candidate = op.params if op.mode == UPDATE else merge_patch(current, op.params)
        try:
            normalized = node_params.validate(kind, candidate)
        except RemoteProtocolError as error:
            raise _prefixed(error, body_path) from None
        self.nodes[op.node_id] = (kind, normalized)
        if op.stamp is not None:
            self.stamps.append((op.node_id, op.stamp))
        self.tuned.append(op.node_id)

    def add(self, op: AddNode, base: str) -> None:
        if op.node_id in self.nodes:
            raise RemoteProtocolError(ErrorCode.CONFLICT, f"node {op.node_id!r} exists", pointer.join(base, "node_id"))
        self.nodes[op.node_id] = (op.kind, dict(op.params))

    def remove(self, op: RemoveNode, base: str) -> None:
        self.node(op.node_id, pointer.join(base, "node_id"))
        del self.nodes[op.node_id]
        self.connections = [c for c in self.connections if op.node_id not in (c["from_node"], c["to_node"])]

    def link(self, op: Connect | Disconnect, base: str) -> None:
        self.node(op.from_node, pointer.join(base, "from_node"))
        self.node(op.to_node, pointer.join(base, "to_node"))
        wanted = op.operation()
        if isinstance(op, Connect):
            self.connections.append(wanted)
        elif wanted in self.connections:
            self.connections.remove(wanted)
        else:
            raise RemoteProtocolError(ErrorCode.NOT_FOUND, "no such connection", base)

    def check(self) -> None:
        """The whole resulting pipeline must be valid (pins, one feed per input, no cycle)."""
        node_params.validate_pipeline(self.document())

    def document(self) -> dict[str, Any]:
        return {
            "nodes": {node_id: {"kind": kind, "params": params} for node_id, (kind, params) in self.nodes.items()},
            "connections": self.connections,
        }


class FakeServer:
    def __init__(self, *, token: str | None = None, pipeline: Mapping[str, Any] | None = None) -> None:
        self.token = token
        self.host = "127.0.0.1"
        self.port = 0
        self.sessions: dict[str, FakeSession] = {}
        self.connections: set[FakeConnection] = set()
        self.drop_before_next_tune = False
        self.drop_after_next_tune = False
        self.refuse_connections = (
            False  # answer handshakes 503 (a daemon restarting), so a test decides when a client gets back in
        )
        self.requests_handled = 0
        self._held: trio.Event | None = None
        self._held_events: list[tuple[FakeConnection, envelope.Message]] | None = None
        self._ids = itertools.count(1)
        self._install(DEFAULT_SESSION, "default", DEFAULT_PIPELINE if pipeline is None else pipeline)

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}{envelope.CONTROL_PATH}"

    def params_of(self, node_id: str, session_id: str = DEFAULT_SESSION) -> dict[str, Any]:
        return copy.deepcopy(self.sessions[session_id].nodes[node_id].params)

    def layout_of(self, node_id: str, session_id: str = DEFAULT_SESSION) -> dict[str, Any] | None:
        return copy.deepcopy(self.sessions[session_id].nodes[node_id].layout)

    def acks_of(self, node_id: str, session_id: str = DEFAULT_SESSION) -> dict[str, int]:
        return self.sessions[session_id].nodes[node_id].params_acks.as_dict()

    def hold_requests(self) -> None:
        """Read no request until :meth:`release_requests`: the client's messages pile up in flight."""
        if self._held is None:
            self._held = trio.Event()

    def release_requests(self) -> None:
        if self._held is not None:
            self._held.set()
            self._held = None

    def hold_events(self) -> None:
        """Keep every event back until :meth:`release_events`; responses still leave at once."""
        if self._held_events is None:
            self._held_events = []

    def release_events(self) -> None:
        held, self._held_events = self._held_events or [], None
        for connection, message in held:
            if connection in self.connections:
                connection.send(message)

    async def drop_connections(self) -> None:
        """Every connection goes away (1001), as when the network or the daemon restarts."""
        for connection in list(self.connections):
            await connection.ws.aclose(CLOSE_GOING_AWAY, "fake server drops the connection")

    def _install(self, session_id: str, name: str, pipeline: Mapping[str, Any]) -> FakeSession:
        doc = node_params.validate_pipeline(pipeline)
        nodes = {node_id: FakeNode(node["kind"], node["params"]) for node_id, node in doc["nodes"].items()}
        session = FakeSession(session_id, name, nodes, list(doc["connections"]))
        self.sessions[session_id] = session
        for node_id in nodes:
            self._refresh_layout(session, node_id)
        return session

    # ------------------------------------------------------------------ WebSocket

    async def handle(self, request: WebSocketRequest) -> None:
        url = urlsplit(request.path)
        if url.path != envelope.CONTROL_PATH:
            await request.reject(404, body=b"no such endpoint")
            return
        if self.refuse_connections:
            await request.reject(503, body=b"fake server refuses connections for now")
            return
        if self.token is not None:
            headers = {k.decode().lower(): v.decode() for k, v in request.headers}
            auth = headers.get("authorization", "")
            presented = auth[7:] if auth.lower().startswith("bearer ") else (parse_qs(url.query).get("token") or [""])[0]
            if not hmac.compare_digest(presented.encode(), self.token.encode()):
                await request.reject(401, body=b"missing or wrong bearer token")
                return
        ws = await request.accept(extra_headers=[(envelope.PROTOCOL_HEADER.encode(), str(envelope.PROTOCOL_VERSION).encode())])
        connection = FakeConnection(ws)
        self.connections.add(connection)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(connection.send_loop)
                try:
                    while True:
                        text = await ws.get_message()
                        if self._held is not None:
                            await self._held.wait()
                        if self.drop_before_next_tune and '"tunenode' in str(text):
                            self.drop_before_next_tune = False
                            await ws.aclose(CLOSE_GOING_AWAY, "fake server lost a tune in flight")
                            break
                        if self.drop_after_next_tune and '"tunenode' in str(text):
                            self.drop_after_next_tune = False
                            connection.muted = True  # applied, but nothing about it reaches this client
                            self._handle_text(connection, text)
                            await ws.aclose(CLOSE_GOING_AWAY, "fake server lost the answer to a tune")
                            break
                        self._handle_text(connection, text)
                except ConnectionClosed:
                    pass
                nursery.cancel_scope.cancel()
        finally:
            self.connections.discard(connection)
            now = time.monotonic()
            for session in self.sessions.values():  # S5, and S7 for the params channel
                for node in session.nodes.values():
                    for sender in connection.senders:
                        node.params_acks.retire(sender, now)
                        node.view_acks.forget(sender)

    def _broadcast(self, message: envelope.Message) -> None:
        for connection in list(self.connections):
            if self._held_events is not None:
                self._held_events.append((connection, message))
            else:
                connection.send(message)

    # ------------------------------------------------------------------ requests

    def _handle_text(self, connection: FakeConnection, text: str | bytes) -> None:
        self.requests_handled += 1
        try:
            message = envelope.parse_message(text)
        except RemoteProtocolError as error:
            connection.send(envelope.error_response(error))
            return
        if not isinstance(message, Request):
            connection.send(envelope.error_response(RemoteProtocolError(ErrorCode.BAD_ENVELOPE, "expected a request", "/type")))
            return
        correlation_id = message.correlation_id
        quiet = message.action == "tunenodeasync" and correlation_id is None
        try:
            action = envelope.parse_action(message)
        except RemoteProtocolError as error:
            self._refuse(connection, message, error, envelope.stamps_of(message), quiet)
            return
        try:
            reply = self._apply(connection, action, correlation_id)
        except RemoteProtocolError as error:
            self._refuse(connection, message, error, envelope.stamps_of(message), quiet)
            return
        if reply is not None:
            connection.send(reply)

    def _refuse(
        self,
        connection: FakeConnection,
        message: Request,
        error: RemoteProtocolError,
        stamps: list[tuple[str, Stamp]],
        quiet: bool,
    ) -> None:
        """Rule S6: a refused stamped message still advances its sender's ack, and the error names the stamp."""
        session_id = message.payload.get("session_id")
        session = self.sessions.get(session_id) if isinstance(session_id, str) else None
        for node_id, stamp in stamps:
            connection.senders.add(stamp.sender)
            if session is not None and node_id in session.nodes:
                session.nodes[node_id].params_acks.refuse(stamp)
        if quiet:
            return
        if message.action == "applybatch":
            reply = envelope.error_response(error, message.correlation_id, refused=stamps)
        elif len(stamps) == 1:
            reply = envelope.error_response(error, message.correlation_id, stamps[0][1], node_id=stamps[0][0])
        else:
            reply = envelope.error_response(error, message.correlation_id)
        connection.send(reply)

    def _session(self, session_id: str) -> FakeSession:
        session = self.sessions.get(session_id)
        if session is None:
            raise RemoteProtocolError(ErrorCode.NOT_FOUND, f"no session {session_id!r}", "/payload/session_id")
        return session

    def _apply(self, connection: FakeConnection, action: Any, correlation_id: str | None) -> envelope.Response | None:
        if isinstance(action, ListSessions):
            return envelope.sessions_listed(
                correlation_id, [{"session_id": s.session_id, "name": s.name} for s in self.sessions.values()]
            )
        if isinstance(action, CreateSession):
            session_id = f"s{next(self._ids)}"
            session = self._install(session_id, action.name or session_id, action.pipeline)
            self._broadcast(envelope.session_created_event(session.session_id, session.name))
            return envelope.session_created_response(correlation_id, session.session_id, session.name)
        session = self._session(action.session_id)
        if isinstance(action, GetPipeline):
            return self._pipeline(session, correlation_id)
        if isinstance(action, DestroySession):
            del self.sessions[session.session_id]
            self._broadcast(envelope.session_destroyed_event(session.session_id))
            return envelope.session_destroyed_response(correlation_id, session.session_id)
        draft = _Draft(session)
        operations = action.operations if isinstance(action, ApplyBatch) else (action,)
        for index, op in enumerate(operations):
            base = pointer.join("/payload/operations", index) if isinstance(action, ApplyBatch) else "/payload"
            if isinstance(op, TuneNode):
                draft.tune(op, base)
            elif isinstance(op, AddNode):
                draft.add(op, base)
            elif isinstance(op, RemoveNode):
                draft.remove(op, base)
            else:
                draft.link(op, base)
        draft.check()
        for _node_id, stamp in draft.stamps:
            connection.senders.add(stamp.sender)
        self._commit(draft)
        if isinstance(action, ApplyBatch):
            return envelope.batch_applied(correlation_id, session.session_id, len(operations))
        if isinstance(action, TuneNode) and not action.sync:
            return None
        return envelope.success(correlation_id)

    def _pipeline(self, session: FakeSession, correlation_id: str | None) -> envelope.Response:
        nodes: dict[str, dict[str, Any]] = {}
        for node_id, node in session.nodes.items():
            entry: dict[str, Any] = {
                "kind": node.kind,
                "params": {**node.params, "_acks": node.params_acks.as_dict(), "_seq": node.params_seq},
                "retired_acks": node.params_acks.retired_as_dict(time.monotonic()),  # S7
            }
            if node.layout is not None:
                entry["view_data"] = {**node.layout, "_acks": node.view_acks.as_dict(), "_seq": node.view_seq}
            nodes[node_id] = entry
        return envelope.pipeline_response(
            correlation_id, session_id=session.session_id, nodes=nodes, connections=session.connections
        )

    # ------------------------------------------------------------------ commit and events

    def _commit(self, draft: _Draft) -> None:
        session = draft.session
        sid = session.session_id
        for node_id in [n for n in session.nodes if n not in draft.nodes]:
            del session.nodes[node_id]
            self._broadcast(envelope.node_removed(sid, node_id))
        for node_id, (kind, params) in draft.nodes.items():
            if node_id not in session.nodes:
                session.nodes[node_id] = FakeNode(kind, params)
                self._broadcast(envelope.node_added(sid, node_id, kind, params))
        old_links = session.connections
        session.connections = draft.connections
        for link in old_links:
            if link not in draft.connections:
                self._broadcast(envelope.connection_removed(sid, **link))
        for link in draft.connections:
            if link not in old_links:
                self._broadcast(envelope.connection_added(sid, **link))
        last_stamp: dict[str, Stamp] = {}
        for node_id, stamp in draft.stamps:
            session.nodes[node_id].params_acks.record(stamp)  # S2
            session.nodes[node_id].view_acks.record(stamp)  # the "render loop" applies it in the next frame
            last_stamp[node_id] = stamp
        for node_id in dict.fromkeys(draft.tuned):
            node = session.nodes[node_id]
            node.params = draft.nodes[node_id][1]
            node.params_seq += 1
            self._broadcast(
                envelope.node_params_changed(
                    sid, node_id, node.params, last_stamp.get(node_id), node.params_acks.as_dict(), node.params_seq
                )
            )  # S3
        for node_id in session.nodes:
            self._refresh_layout(session, node_id, last_stamp.get(node_id), emit=True)

    def _refresh_layout(self, session: FakeSession, node_id: str, stamp: Stamp | None = None, *, emit: bool = False) -> None:
        """S4: view data when the layout changed, or after a stamped update; unstamped when the server caused it."""
        node = session.nodes[node_id]
        if node_params.role(node.kind) != node_params.COMPOSITOR:
            return
        new_layout = self._layout(session, node)
        changed = new_layout != node.layout
        node.layout = new_layout
        if emit and (changed or stamp is not None):
            node.view_seq += 1
            self._broadcast(
                envelope.node_view_data_updated(
                    session.session_id, node_id, new_layout, stamp, node.view_acks.as_dict(), node.view_seq, time.time()
                )
            )

    @staticmethod
    def _layout(session: FakeSession, node: FakeNode) -> dict[str, Any]:
        full = node_params.with_defaults(node.kind, node.params)
        canvas_w, canvas_h = full["width"], full["height"]
        fed = {link["to_pin"]: link["from_node"] for link in session.connections if session.nodes.get(link["to_node"]) is node}
        layers = []
        for pin in sorted(fed, key=layout.slot_of_pin):
            source = session.nodes.get(fed[pin])
            source_params = node_params.with_defaults(source.kind, source.params) if source else {}
            source_w, source_h = source_params.get("width", 1280), source_params.get("height", 720)
            layer = full["layers"].get(pin, {})
            rect = layer.get("rect")
            if rect is None:
                box = layout.auto_pip_rect(layout.slot_of_pin(pin), canvas_w, canvas_h, source_w, source_h)
            elif layer.get("aspect_fit", True):
                box = layout.aspect_fit(source_w, source_h, layout.Rect.from_mapping(rect))
            else:
                box = layout.Rect.from_mapping(rect)
            layers.append({"id": pin, **box.to_dict(), "source_width": source_w, "source_height": source_h})
        return {"canvas_width": canvas_w, "canvas_height": canvas_h, "layers": layers, "text_overlays": [], "image_overlays": []}


async def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    pipeline: Mapping[str, Any] | None = None,
    task_status: trio.TaskStatus[FakeServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a fake server until cancelled; ``task_status.started`` gets the :class:`FakeServer` (its ``url`` has the bound port)."""
    server = FakeServer(token=token, pipeline=pipeline)
    async with trio.open_nursery() as nursery:
        listener = await nursery.start(
            functools.partial(serve_websocket, server.handle, host, port, None, handler_nursery=nursery)
        )
        server.host = host
        server.port = listener.port
        task_status.started(server)
