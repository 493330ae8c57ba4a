"""The read-only actions: ``getpipeline`` (a session's state as a resyncing client needs it) and ``listsessions``."""

from __future__ import annotations

import time
from typing import Any

from compositord.daemon.sessions.live import LiveSessions
from compositord.protocol import envelope, streamkit


def getpipeline(live_sessions: LiveSessions, action: envelope.GetPipeline, cid: str | None) -> envelope.Response:
    """Params, seq and state per node, with the acks beside them (``_`` keys stay out of params and view data)."""
    record, live = live_sessions.lookup(action.session_id)
    nodes: dict[str, dict[str, Any]] = {}
    now = time.monotonic()
    for node_id, node in record.nodes.items():
        entry: dict[str, Any] = {
            "kind": node.kind,
            "params": dict(node.params),
            "seq": node.seq,
            "state": envelope.node_state(live.node_errors.get(node_id), live.node_conditions.get(node_id)),
        }
        # The acks as of this state (S2), per channel: a client that resyncs drops the pending
        # values already processed at once instead of masking them until the node's next event.
        entry["acks"] = live.book(node_id).as_dict() if node_id in live.acks else {}
        # S7: the acks of closed connections, so a reconnecting client re-sends only what was not processed.
        entry["retired_acks"] = live.book(node_id).retired_as_dict(now) if node_id in live.acks else {}
        if node_id in live.last_view:
            entry["view_data"] = dict(live.last_view[node_id])
            entry["view_acks"] = dict(live.last_view_acks.get(node_id, {}))
        nodes[node_id] = entry
    connections = [c.to_json() for c in record.connections]
    # The same state as StreamKit's Pipeline object, which its clients read (additive: the fields above stay).
    pipeline = streamkit.pipeline_object(record.name, nodes, connections, live.last_view, live_sessions.image_data)
    health = live.engine.health()
    return envelope.pipeline_response(
        cid,
        session_id=record.session_id,
        nodes=nodes,
        connections=connections,
        pipeline=pipeline,
        state=health.state,
        engine=health.to_json(),
    )


def listsessions(live_sessions: LiveSessions, cid: str | None) -> envelope.Response:
    """The sessions that have an engine, with its state (a supervised one that keeps failing is
    ``parked``; each also with StreamKit's ``id`` and ``created_at``), and those parked at start over
    a budget, ``state`` ``{"error": why}``."""
    parked = live_sessions.parked()
    sessions = []
    for info, nodes in _running_sessions(live_sessions):
        live = live_sessions.get(info["id"])
        state = live.engine.health().state if live is not None else "ok"
        sessions.append({"session_id": info["id"], **info, "nodes": nodes, "state": state})
    sessions += [
        {"session_id": s.session_id, "id": s.session_id, "name": s.name, "nodes": len(s.nodes), "state": envelope.node_state(why)}
        for s in live_sessions.store.sessions().values()
        if s.session_id in parked and (why := parked[s.session_id]) is not None
    ]
    return envelope.sessions_listed(cid, sessions)


def session_infos(live_sessions: LiveSessions) -> list[dict[str, Any]]:
    """StreamKit's ``SessionInfo`` (``id``, ``name``, ``created_at``) of every running session."""
    return [info for info, _ in _running_sessions(live_sessions)]


def _running_sessions(live_sessions: LiveSessions) -> list[tuple[dict[str, Any], int]]:
    found = []
    for record in live_sessions.store.sessions().values():
        live = live_sessions.get(record.session_id)
        if live is not None:
            found.append((streamkit.session_info(record.session_id, record.name, live.created_at), len(record.nodes)))
    return found
