"""Changes the store could not keep (a full disk), taken back from everyone who was told of them.

A change is published and handed to the engine as soon as it is in the
store's mirror, before its COMMIT (tunes, structure changes, batches). When
the disk under the store is full, the COMMIT fails and the store reloads its
mirror from the disk (``Store.add_revert_listener``). Then every running
session that went back is made whole again: its engine gets the session as
stored (one ``TopologyUpdate``: structure and params), every client gets the
events that lead from what it was told to what is stored (connections and
nodes removed and added, then ``nodeparamschanged`` for each node whose
params differ, without a stamp: the server changed them), and the session's
budget counts what is stored. The acks stay: a refused stamp still counts
as processed (rule S6), so a client drops its masked value on the event.
A synchronous change also answers its caller with the error (``refusals.disk_full``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from compositord.daemon.engine import api
from compositord.daemon.sessions.budgets import pipeline_of
from compositord.daemon.sessions.live import LiveSessions
from compositord.daemon.state.model import SessionRecord
from compositord.protocol import causal, envelope

log = logging.getLogger(__name__)


class StoreReverts:
    def __init__(self, live: LiveSessions) -> None:
        self._live = live

    def reverted(self, session_ids: frozenset[str], before: Mapping[str, SessionRecord]) -> None:
        for session_id in sorted(session_ids):
            live = self._live.get(session_id)
            stored = self._live.store.sessions().get(session_id)
            told = before.get(session_id)
            if live is None or stored is None or told is None:
                continue  # not running (being created or destroyed: its caller gets the error), or parked
            log.warning("session %r: changes the full disk could not keep are taken back", session_id)
            live.engine.submit(api.TopologyUpdate(stored.copy()))
            self._live.budgets.set(session_id, self._live.budgets.cost_of(pipeline_of(stored.nodes, stored.connections)))
            for conn in told.connections:
                if conn not in stored.connections:
                    self._live.publish(envelope.connection_removed(session_id, **conn.to_json()))
            gone = set(told.nodes) - set(stored.nodes)
            for node_id in sorted(gone):
                self._live.publish(envelope.node_removed(session_id, node_id))
            live.forget_nodes(gone)
            for node_id, node in stored.nodes.items():
                if node_id not in told.nodes:
                    self._live.publish(envelope.node_added(session_id, node_id, node.kind, node.params))
            for conn in stored.connections:
                if conn not in told.connections:
                    self._live.publish(envelope.connection_added(session_id, **conn.to_json()))
            for node_id, node in stored.nodes.items():
                was = told.nodes.get(node_id)
                if was is not None and (was.params != node.params or was.seq != node.seq):
                    event = envelope.node_params_changed(
                        session_id, node_id, node.params, None, live.book(node_id).as_dict(), node.seq
                    )
                    self._live.publish(event, (session_id, node_id, causal.PARAMS_CHANNEL))
