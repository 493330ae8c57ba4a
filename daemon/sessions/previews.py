"""Previews: ``getpreview``, ``subscribepreview``, ``unsubscribepreview``, and the thumbnails a
``sink::preview`` node makes, sent to its subscribers only."""

from __future__ import annotations

from typing import Any

from compositord.daemon.control.connection import Connection
from compositord.daemon.control.mailbox import MailboxFull
from compositord.daemon.control.outgoing import Broadcast
from compositord.daemon.engine import api
from compositord.daemon.sessions.live import LiveSessions
from compositord.daemon.sessions.refusals import not_found
from compositord.protocol import envelope
from compositord.protocol.errors import ErrorCode, RemoteProtocolError
from compositord.protocol.params import PREVIEW_KIND

PreviewAction = envelope.GetPreview | envelope.SubscribePreview | envelope.UnsubscribePreview


class Previews:
    def __init__(self, live: LiveSessions) -> None:
        self._live = live

    def handle(self, connection: Connection, action: PreviewAction, cid: str | None) -> envelope.Response:
        record, live = self._live.lookup(action.session_id)
        node = record.nodes.get(action.node_id)
        if node is None:
            raise not_found(f"no node {action.node_id!r} in this session", "/payload/node_id")
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
