"""What the engines report, turned into protocol events for the hub (on the trio thread).

``EngineEventHandler`` is the ``api.EngineEvents`` sink of every session's
engine. Coalescing keys are ``(session_id, node_id, channel)`` with channel
``"view"``, ``"stats"`` or ``"state"``: the hub sends the latest of each once
per frame of the session. Reports about a session or a node that is gone are
dropped (an engine may still be finishing a frame when its session is destroyed).
"""

from __future__ import annotations

import logging

from compositord.daemon.engine import api
from compositord.daemon.sessions.live import LiveSessions
from compositord.daemon.sessions.observer import SessionObserver
from compositord.daemon.sessions.previews import Previews
from compositord.protocol import causal, envelope

log = logging.getLogger(__name__)


class EngineEventHandler:
    def __init__(self, live: LiveSessions, previews: Previews, observer: SessionObserver) -> None:
        self._live = live
        self._previews = previews
        self._observer = observer

    def on_event(self, event: api.Event) -> None:
        # The most frequent first: a frame end every frame, view data whenever the layout moves.
        if isinstance(event, api.FrameEnded):
            self._live.hub.frame_ended(event.session_id)  # what the hub holds of the session goes out now
        elif isinstance(event, api.ViewData):
            self._view_data(event)
        elif isinstance(event, api.NodeStats):
            if event.session_id in self._live:
                self._observer.node_stats(event.session_id, event.node_id, event.stats)
                self._live.publish(
                    envelope.node_stats_updated(event.session_id, event.node_id, event.stats),
                    (event.session_id, event.node_id, "stats"),
                )
        elif isinstance(event, api.NodeState):
            self._node_state(event)
        elif isinstance(event, api.PreviewUpdated):
            self._previews.deliver(event)
        elif isinstance(event, api.CompositorPreviewUpdated):
            self._previews.deliver_compositor(event)
        elif isinstance(event, api.Started):
            log.debug("session %s: first frame rendered", event.session_id)
        elif isinstance(event, api.Failed) and event.session_id in self._live:
            log.error("session %s: the engine stopped: %s", event.session_id, event.message)

    def _view_data(self, event: api.ViewData) -> None:
        live = self._live.get(event.session_id)
        if live is None:
            return  # a late report of a destroyed session
        layout = causal.strip_private(dict(event.layout))
        live.last_view[event.node_id] = layout
        live.last_view_acks[event.node_id] = dict(event.acks)
        published = envelope.node_view_data_updated(
            event.session_id, event.node_id, layout, event.stamp, event.acks, event.seq, event.timestamp
        )
        self._live.publish(published, (event.session_id, event.node_id, causal.VIEW_CHANNEL))

    def _node_state(self, event: api.NodeState) -> None:
        """A node entered (``error``) or left (None) its error state, or a live input changed its condition
        (``connecting`` / ``live``): remembered for ``getpipeline`` and told to every client with ``nodestatechanged``."""
        session_id, node_id = event.session_id, event.node_id
        message = event.error or None
        condition = event.condition if event.condition in envelope.LIVE_CONDITIONS else None
        live = self._live.get(session_id)
        record = self._live.store.sessions().get(session_id)
        if live is None or record is None or node_id not in record.nodes:
            return  # a late report about a session or node that is gone
        if message:
            log.warning("session %s node %s: %s", session_id, node_id, message)
        before = (live.node_errors.get(node_id), live.node_conditions.get(node_id))
        if before == (message, condition):
            return
        for kept, value in ((live.node_errors, message), (live.node_conditions, condition)):
            if value is None:
                kept.pop(node_id, None)
            else:
                kept[node_id] = value
        if message is None and before[0] is not None:
            log.info("session %s node %s: error cleared", session_id, node_id)
        self._live.publish(envelope.node_state_changed(session_id, node_id, message, condition), (session_id, node_id, "state"))
