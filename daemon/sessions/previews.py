"""Previews: ``getpreview``, ``subscribepreview``, ``unsubscribepreview``, and the thumbnails a
``sink::preview`` node makes, sent to its subscribers only.

A subscription to a compositor node watches its output through an ephemeral
preview in the engine (``api.StartCompositorPreview``), one per node, width
and rate, shared by the connections that ask for the same; a connection
watches a compositor at one size at a time. The preview stops when its last
subscriber unsubscribes or closes; the engine drops it by itself when the
compositor is removed.
"""

from __future__ import annotations

import uuid
from typing import Any

from compositord.daemon.control.connection import Connection
from compositord.daemon.control.mailbox import MailboxFull
from compositord.daemon.control.outgoing import Broadcast
from compositord.daemon.engine import api
from compositord.daemon.sessions.live import CompositorWatch, LiveSession, LiveSessions
from compositord.daemon.sessions.refusals import not_found
from compositord.protocol import envelope
from compositord.protocol.errors import ErrorCode, RemoteProtocolError
from compositord.protocol.params import COMPOSITOR_KIND, PREVIEW_KIND

PreviewAction = envelope.GetPreview | envelope.SubscribePreview | envelope.UnsubscribePreview


class Previews:
    def __init__(self, live: LiveSessions) -> None:
        self._live = live

    def handle(self, connection: Connection, action: PreviewAction, cid: str | None) -> envelope.Response:
        record, live = self._live.lookup(action.session_id)
        node = record.nodes.get(action.node_id)
        if node is None:
            raise not_found(f"no node {action.node_id!r} in this session", "/payload/node_id")
        if node.kind == COMPOSITOR_KIND and not isinstance(action, envelope.GetPreview):
            return self._watch_compositor(connection, live, action, cid)
        if isinstance(action, envelope.SubscribePreview) and (action.max_width is not None or action.max_fps is not None):
            key = "max_width" if action.max_width is not None else "max_fps"
            raise RemoteProtocolError(
                ErrorCode.INVALID_PARAMS,
                f"/payload/{key}: only for a {COMPOSITOR_KIND} node; a {PREVIEW_KIND} node has {key} in its params",
                f"/payload/{key}",
            )
        if node.kind != PREVIEW_KIND:
            raise RemoteProtocolError(
                ErrorCode.INVALID_PARAMS,
                f"/payload/node_id: node {action.node_id!r} is a {node.kind}, not a {PREVIEW_KIND}",
                "/payload/node_id",
            )
        if isinstance(action, envelope.SubscribePreview):
            live.preview_subscribers.setdefault(action.node_id, set()).add(connection)
            return envelope.success(cid)
        if isinstance(action, envelope.UnsubscribePreview):
            live.preview_subscribers.get(action.node_id, set()).discard(connection)
            return envelope.success(cid)
        image = live.engine.preview(action.node_id)
        if image is None:
            raise not_found(
                f"node {action.node_id!r} has no thumbnail yet (it makes one once a compositor feeds its input)",
                "/payload/node_id",
            )
        return envelope.preview_response(cid, action.session_id, action.node_id, **preview_fields(image))

    def deliver(self, event: api.PreviewUpdated) -> None:
        """``nodepreviewupdated`` to the node's subscribers only, coalesced per connection (a slow
        client gets the latest, not a backlog)."""
        live = self._live.get(event.session_id)
        subscribers = live.preview_subscribers.get(event.node_id) if live is not None else None
        if not subscribers:
            return
        message = Broadcast(
            envelope.serialize(envelope.node_preview_updated(event.session_id, event.node_id, **preview_fields(event.image)))
        )
        key = (event.session_id, event.node_id, "preview")
        for connection in list(subscribers):
            try:
                connection.deliver([(key, message)])
            except MailboxFull as exc:
                subscribers.discard(connection)
                connection.close_for_policy(f"too slow: {exc}")

    def connection_closed(self, connection: Connection) -> None:
        """A subscription ends with its connection."""
        for _, live in self._live.items():
            for subscribers in live.preview_subscribers.values():
                subscribers.discard(connection)
            for node_id in {watch.node_id for watch in live.compositor_previews.values()}:
                _stop_watching(live, connection, node_id)

    def _watch_compositor(
        self,
        connection: Connection,
        live: LiveSession,
        action: envelope.SubscribePreview | envelope.UnsubscribePreview,
        cid: str | None,
    ) -> envelope.Response:
        _stop_watching(live, connection, action.node_id)
        if isinstance(action, envelope.UnsubscribePreview):
            return envelope.success(cid)
        width = action.max_width if action.max_width is not None else envelope.COMPOSITOR_PREVIEW_WIDTH
        fps = action.max_fps if action.max_fps is not None else envelope.COMPOSITOR_PREVIEW_FPS
        for watch in live.compositor_previews.values():
            if (watch.node_id, watch.max_width, watch.max_fps) == (action.node_id, width, fps):
                watch.subscribers.add(connection)
                return envelope.success(cid)
        preview_id = uuid.uuid4().hex
        live.compositor_previews[preview_id] = CompositorWatch(action.node_id, width, fps, {connection})
        live.engine.submit(api.StartCompositorPreview(preview_id, action.node_id, width, fps))
        return envelope.success(cid)

    def deliver_compositor(self, event: api.CompositorPreviewUpdated) -> None:
        """A compositor preview's thumbnail to its watchers (``nodepreviewupdated`` with ``rendered_at``)."""
        live = self._live.get(event.session_id)
        if live is None:
            return  # a late report of a destroyed session
        watch = live.compositor_previews.get(event.preview_id)
        if watch is None or not watch.subscribers:
            return
        fields = preview_fields(event.image)
        message = Broadcast(
            envelope.serialize(
                envelope.node_preview_updated(event.session_id, event.node_id, **fields, rendered_at=event.rendered_at)
            )
        )
        key = (event.session_id, event.node_id, "preview")
        for connection in list(watch.subscribers):
            try:
                connection.deliver([(key, message)])
            except MailboxFull as exc:
                _stop_watching(live, connection, event.node_id)
                connection.close_for_policy(f"too slow: {exc}")


def _stop_watching(live: LiveSession, connection: Connection, node_id: str) -> None:
    """``connection`` no longer watches compositor ``node_id``; a preview left without watchers stops."""
    for preview_id, watch in list(live.compositor_previews.items()):
        if watch.node_id == node_id and connection in watch.subscribers:
            watch.subscribers.discard(connection)
            if not watch.subscribers:
                del live.compositor_previews[preview_id]
                live.engine.submit(api.StopCompositorPreview(preview_id))


def preview_fields(image: api.PreviewImage) -> dict[str, Any]:
    """The wire fields of a thumbnail."""
    return {
        "jpeg": image.jpeg,
        "width": image.width,
        "height": image.height,
        "frame_number": image.frame_number,
        "media_time": round(image.media_time, 6),
        "timestamp": image.timestamp,
    }
