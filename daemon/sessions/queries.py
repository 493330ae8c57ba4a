"""The read-only actions: ``getpipeline`` (a session's state as a resyncing client needs it) and ``listsessions``."""

from __future__ import annotations

import time
from typing import Any

from compositord.daemon.sessions.live import LiveSessions
from compositord.protocol import envelope


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
            "state": envelope.node_state(live.node_errors.get(node_id)),
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
    health = live.engine.health()
    return envelope.pipeline_response(
        cid,
        session_id=record.session_id,
        nodes=nodes,
        connections=[c.to_json() for c in record.connections],
        state=health.state,
        engine=health.to_json(),
    )


def listsessions(live_sessions: LiveSessions, cid: str | None) -> envelope.Response:
    """The sessions that have an engine, with its state (a supervised one that keeps failing is listed
    ``parked``); a stored session whose in-process engine did not start is not listed."""
    sessions = []
    for record in live_sessions.store.sessions().values():
        live = live_sessions.get(record.session_id)
        if live is not None:
            state = live.engine.health().state
            sessions.append({"session_id": record.session_id, "name": record.name, "nodes": len(record.nodes), "state": state})
    return envelope.sessions_listed(cid, sessions)
