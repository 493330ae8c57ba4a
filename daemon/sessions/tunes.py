"""Tunes: ``tunenode`` / ``tunenodeasync`` and ``applybatch``, and the params channel's acks.

Order of work for a change (PROTOCOL.md section 3, steps 1-6): take the stamp,
strip every ``_`` key, compute the resulting params (replace or RFC 7396 merge
patch against the durable params; on a connection of StreamKit's dialect an
``UpdateParams`` merges as StreamKit's server does), validate them whole, store
the inline images they name, store them, hand the full validated params plus
the stamp to the session's engine, and tell every connection
(``nodeparamschanged``). Anything refused before the store step
changes nothing.

Ordering (rule S1): the session's lock covers everything from reading the
durable params to publishing the event, so two connections tuning the same
node cannot interleave a read and a write; the wait for the COMMIT
(``tunenode``) happens after the lock is released, so a slow fsync never holds
up other edits, and the reply still only goes out once the change is durable.

Acks: the params channel keeps one ``AckBook`` per node (rules S2, S3, S5, S6,
S7: retired when a connection closes); the view channel's acks live in the engine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from compositord.daemon.control.connection import Connection
from compositord.daemon.engine import api
from compositord.daemon.sessions.budgets import pipeline_of
from compositord.daemon.sessions.inline_images import InlineImages
from compositord.daemon.sessions.live import LiveSession, LiveSessions, holding
from compositord.daemon.sessions.refusals import Refusal, disk_full, not_found
from compositord.daemon.sessions.senders import SenderOwners, sender_path
from compositord.daemon.sessions.structure import Working, check_inputs_kept, committed_topology
from compositord.daemon.state.model import NodeRecord, SessionRecord
from compositord.daemon.state.store import StoreFull
from compositord.protocol import budget, causal, envelope, pointer, scenes, streamkit
from compositord.protocol import params as node_params
from compositord.protocol.budget import SessionCost
from compositord.protocol.causal import AckBook, Stamp
from compositord.protocol.errors import ErrorCode, RemoteProtocolError


@dataclass(frozen=True)
class _Tune:
    """One tune with where it sat in the request, for error paths."""

    action: envelope.TuneNode
    body_path: str  # "/payload/message/PatchParams", "/payload/operations/3/message/UpdateParams"
    merge_updates: bool = False  # UpdateParams merges into the params (StreamKit's dialect) instead of replacing them


class Tunes:
    def __init__(self, live: LiveSessions, images: InlineImages, owners: SenderOwners) -> None:
        self._live = live
        self._images = images
        self._owners = owners

    async def tunenode(self, connection: Connection, action: envelope.TuneNode, cid: str | None) -> envelope.Response | None:
        tune = _Tune(action, pointer.join("/payload/message", action.variant), _merges_updates(connection))
        return await self._tune_one(
            connection, action.session_id, action.node_id, action.stamp, tune.body_path, lambda _: tune, cid
        )

    async def take(self, connection: Connection, action: envelope.Take, cid: str | None) -> envelope.Response | None:
        """Preview to program, program to preview: one patch, computed from the params under the session's lock."""
        return await self._tune_one(
            connection, action.session_id, action.node_id, action.stamp, "/payload", lambda nodes: _take_tune(nodes, action), cid
        )

    async def _tune_one(
        self,
        connection: Connection,
        session_id: str,
        node_id: str,
        stamp: Stamp | None,
        path: str,
        tune_of: Callable[[Mapping[str, NodeRecord]], _Tune],
        cid: str | None,
    ) -> envelope.Response | None:
        """One change of one node: ``tune_of`` makes it from the session's nodes, read under the lock."""
        stamps = [(node_id, stamp)] if stamp is not None else []
        self._claim(connection, [(taken, sender_path(path)) for _, taken in stamps], stamps)
        try:
            _, live = self._live.lookup(session_id)
        except RemoteProtocolError as error:
            raise Refusal(error, stamps) from None
        with live.engine.preparing_command():
            submitted = await self._tune_locked(connection, session_id, live, stamps, tune_of)
        if not submitted.sync:
            return None
        await self._committed(stamps)  # answered once the change is committed
        return envelope.success(cid)

    async def _tune_locked(
        self,
        connection: Connection,
        session_id: str,
        live: LiveSession,
        stamps: list[tuple[str, Stamp]],
        tune_of: Callable[[Mapping[str, NodeRecord]], _Tune],
    ) -> envelope.TuneNode:
        """Under the session's lock: check, store and submit the change; returns the action submitted."""
        async with holding(live.lock):
            record, _ = self._live.lookup(session_id)
            try:
                tune = tune_of(record.nodes)
                node = _tuned_node(record.nodes, live, tune, None, self._live.context)
                check_inputs_kept(node, record.connections, tune.body_path)
                cost = self._cost_after(session_id, record, node, tune)
                await self._images.store(tune.action.images, tune.body_path)
            except RemoteProtocolError as error:
                self.refuse_stamps(connection, session_id, stamps)
                raise Refusal(error, stamps) from None
            action = tune.action
            with self._live.budgets.reserve(session_id, cost):
                seq = await self._live.store.set_params(session_id, node.node_id, node.params, wait_durable=False)
            if action.stamp is not None:
                live.book(node.node_id).record(action.stamp)
            live.engine.submit(_update_of(node, action))
            self._live.hub.edited_by(connection)  # its acks go out first (hub.py, "Whom first")
            self._publish_params(session_id, live, node.node_id, node.params, seq, action.stamp)
        return action

    async def applybatch(self, connection: Connection, action: envelope.ApplyBatch, cid: str | None) -> envelope.Response:
        """Every operation checked on a working copy, then one transaction and one frame."""
        session_id = action.session_id
        stamps = [(op.node_id, op.stamp) for op in action.operations if isinstance(op, envelope.TuneNode) and op.stamp]
        self._claim(
            connection,
            [
                (op.stamp, sender_path(pointer.join("/payload/operations", index, "message", op.variant)))
                for index, op in enumerate(action.operations)
                if isinstance(op, envelope.TuneNode) and op.stamp
            ],
            stamps,
        )
        try:
            _, live = self._live.lookup(session_id)
        except RemoteProtocolError as error:
            raise Refusal(error, stamps) from None
        async with holding(live.lock):
            record, _ = self._live.lookup(session_id)
            working = Working(record, self._live.context)
            events: list[envelope.Event] = []
            tuned: list[api.ParamsUpdate] = []
            batch_books: dict[str, AckBook] = {}
            params_paths: dict[str, str] = {}  # node -> where the batch last set its params (budget errors name it)
            try:
                for index, op in enumerate(action.operations):
                    path = pointer.join("/payload/operations", index)
                    if isinstance(op, envelope.TuneNode):
                        tune = _Tune(op, pointer.join(path, "message", op.variant), _merges_updates(connection))
                        node = _tuned_node(working.nodes, live, tune, batch_books, self._live.context)
                        check_inputs_kept(node, working.connections, tune.body_path)
                        working.set_params(node.node_id, node.params)
                        params_paths[node.node_id] = tune.body_path
                        tuned.append(_update_of(node, op))
                        await self._images.store(op.images, tune.body_path)
                    else:
                        events += working.apply(op, path)
                        if isinstance(op, envelope.AddNode):
                            params_paths[op.node_id] = pointer.join(path, "params")
                            await self._images.store(op.images, pointer.join(path, "params"))
                cost = self._live.budgets.check(
                    session_id,
                    pipeline_of(working.nodes, working.connections),
                    params_paths=params_paths,
                    request_path="/payload/operations",
                )
            except RemoteProtocolError as error:
                self.refuse_stamps(connection, session_id, stamps)  # S6: every stamp of a refused batch
                raise Refusal(error, stamps) from None
            with self._live.budgets.reserve(session_id, cost):
                await self._live.store.apply_atomically(working.ops, wait_durable=False)
            for update in tuned:
                if update.stamp is not None:
                    live.book(update.node_id).record(update.stamp)
            # One command: the structure change and every tune land in the same frame.
            topology = committed_topology(self._live, live, working) if working.structure_changed else None
            if tuned or topology is not None:
                live.engine.submit(api.BatchUpdate(tuple(tuned), topology))
            if tuned:
                self._live.hub.edited_by(connection)
            for event in events:
                self._live.publish(event)
            stored = self._live.store.sessions()[session_id]
            last_stamp = {update.node_id: update.stamp for update in tuned}
            for node_id, node_stamp in last_stamp.items():
                if node_id in stored.nodes:
                    node = stored.nodes[node_id]
                    self._publish_params(session_id, live, node_id, node.params, node.seq, node_stamp)
        await self._committed(stamps)  # one transaction (apply_atomically), answered once committed
        return envelope.batch_applied(cid, session_id, len(action.operations))

    async def _committed(self, stamps: list[tuple[str, Stamp]]) -> None:
        """Wait for the COMMIT; on a full disk the change was taken back: refused, naming its stamps (they
        were recorded, and stay: S6), so the client drops what it masks."""
        try:
            await self._live.store.flush()
        except StoreFull:
            raise Refusal(disk_full(), stamps) from None

    def _claim(self, connection: Connection, claimed: Sequence[tuple[Stamp, str]], stamps: list[tuple[str, Stamp]]) -> None:
        """The request's nonces become this connection's, or it is refused before it changes anything (no ack)."""
        try:
            self._owners.claim(connection, [(stamp.sender, path) for stamp, path in claimed])
        except RemoteProtocolError as error:
            raise Refusal(error, stamps) from None

    def refuse_stamps(self, connection: Connection, session_id: Any, stamps: Sequence[tuple[str, Stamp]]) -> None:
        """Rule S6: a refused stamped message still counts as processed (for nodes that exist), but only
        for a nonce this connection owns: another connection's acks never move."""
        live = self._live.get(session_id)
        record = self._live.store.sessions().get(session_id) if isinstance(session_id, str) else None
        for node_id, stamp in stamps:
            try:
                self._owners.claim(connection, [(stamp.sender, "")])
            except RemoteProtocolError:
                continue  # someone else's nonce, or one too many: the error already says why the message was refused
            if live is not None and record is not None and node_id in record.nodes:
                live.book(node_id).refuse(stamp)

    def connection_closed(self, connection: Connection) -> None:
        """Rule S5 on both channels for the nonces this connection owns; S7 keeps the params acks as retired acks."""
        now = time.monotonic()
        for sender in self._owners.release(connection):
            for _, live in self._live.items():
                for book in live.acks.values():
                    book.retire(sender, now)
                live.engine.submit(api.ForgetSender(sender))

    def _cost_after(self, session_id: str, record: SessionRecord, node: NodeRecord, tune: _Tune) -> SessionCost:
        """The session's cost with the tuned node, checked against the budgets; a patch of fields no cost reads
        (a layer dragged, a T-bar moved) keeps the cost the session has."""
        current = self._live.budgets.cost(session_id)
        action = tune.action
        patch_only = action.mode == envelope.PATCH and not tune.merge_updates
        if current is not None and patch_only and budget.cost_unchanged_by(node.kind, action.params):
            return current
        return self._live.budgets.check(
            session_id,
            pipeline_of({**record.nodes, node.node_id: node}, record.connections),
            params_paths={node.node_id: tune.body_path},
            request_path=tune.body_path,
        )

    def _publish_params(
        self, session_id: str, live: LiveSession, node_id: str, params: Mapping[str, Any], seq: int, stamp: Stamp | None
    ) -> None:
        event = envelope.node_params_changed(session_id, node_id, params, stamp, live.book(node_id).as_dict(), seq)
        self._live.publish(event, (session_id, node_id, causal.PARAMS_CHANNEL))


def _tuned_node(
    nodes: Mapping[str, NodeRecord],
    live: LiveSession,
    tune: _Tune,
    batch_books: dict[str, AckBook] | None,
    context: node_params.ValidationContext,
) -> NodeRecord:
    """The node with the params a tune results in; raises without changing anything.

    ``batch_books`` (in a batch) holds, per node, the stamps taken earlier in the same batch (not yet in
    the node's book).
    """
    action = tune.action
    node = nodes.get(action.node_id)
    if node is None:
        node_path = pointer.join(tune.body_path.rsplit("/message/", 1)[0], "node_id")
        raise not_found(f"no node {action.node_id!r} in this session", node_path)
    if action.transition is not None and node.kind != node_params.COMPOSITOR_KIND:
        path = pointer.join(tune.body_path, scenes.TRANSITION_ONCE_KEY)
        raise RemoteProtocolError(
            ErrorCode.INVALID_PARAMS, f"{path}: {action.node_id!r} is a {node.kind}: only a compositor has transitions", path
        )
    if action.stamp is not None:
        # S2: a rev at or below the node's ack, or at or below one taken earlier in this batch, is a replay.
        # The batch's own book first: when it has the sender, its rev is the higher floor, the one to name.
        taken = batch_books.setdefault(action.node_id, AckBook()) if batch_books is not None else None
        if taken is not None:
            taken.check(action.stamp, path=tune.body_path)
        live.book(action.node_id).check(action.stamp, path=tune.body_path)
        if taken is not None:
            taken.record(action.stamp)
    if action.mode == envelope.PATCH:
        candidate = causal.merge_patch(node.params, action.params)
    elif tune.merge_updates:
        candidate = streamkit.merge_update(node.params, action.params)
    else:
        candidate = action.params
    try:
        validated = node_params.validate(node.kind, candidate, context=context)
    except RemoteProtocolError as error:
        raise envelope.prefixed_error(error, tune.body_path) from None
    return NodeRecord(node.node_id, node.kind, validated, node.seq + 1)


def _update_of(node: NodeRecord, tune: envelope.TuneNode) -> api.ParamsUpdate:
    """What the engine gets of an accepted tune: the node's new params and how the tune asked them shown."""
    transition = dict(tune.transition) if tune.transition is not None else None
    return api.ParamsUpdate(node.node_id, node.params, tune.stamp, tune.animate, transition)


def _merges_updates(connection: Connection) -> bool:
    """StreamKit's server merges an ``UpdateParams`` into the params: so does this one for its dialect."""
    return connection.dialect == streamkit.STREAMKIT


def _take_tune(nodes: Mapping[str, NodeRecord], take: envelope.Take) -> _Tune:
    """The patch a ``take`` makes of the node's params now: preview and program scenes exchanged."""
    node = nodes.get(take.node_id)
    if node is None:
        raise not_found(f"no node {take.node_id!r} in this session", "/payload/node_id")
    if node.kind != node_params.COMPOSITOR_KIND:
        raise RemoteProtocolError(
            ErrorCode.INVALID_PARAMS,
            f"/payload/node_id: {take.node_id!r} is a {node.kind}, not a {node_params.COMPOSITOR_KIND}",
            "/payload/node_id",
        )
    preview = node.params.get("preview_scene")
    if preview is None:
        raise RemoteProtocolError(
            ErrorCode.INVALID_PARAMS,
            f"/payload/node_id: compositor {take.node_id!r} has no preview_scene to take",
            "/payload/node_id",
        )
    patch: dict[str, Any] = {"program_scene": preview, "preview_scene": node.params.get("program_scene")}
    if take.transition is not None:
        patch["transition"] = dict(take.transition)
    if node.params.get("transition_position") is not None:
        patch["transition_position"] = None  # the take finishes what the T-bar held
    return _Tune(envelope.TuneNode(take.session_id, take.node_id, envelope.PATCH, patch, take.stamp), "/payload")
