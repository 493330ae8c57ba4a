"""A request's way in: parse it, route it to its concern, and answer every refusal with its path."""

from __future__ import annotations

import logging
from pathlib import Path

from compositord.daemon.control.connection import Connection
from compositord.daemon.sessions import assets, pipeline_files, queries
from compositord.daemon.sessions.live import LiveSessions
from compositord.daemon.sessions.observer import SessionObserver
from compositord.daemon.sessions.previews import Previews
from compositord.daemon.sessions.refusals import Refusal, disk_full
from compositord.daemon.sessions.structure import Structure
from compositord.daemon.sessions.tunes import Tunes
from compositord.daemon.state.store import StoreError, StoreFull
from compositord.protocol import envelope
from compositord.protocol.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from compositord.protocol.message_head import MessageHead

log = logging.getLogger(__name__)


class Dispatch:
    def __init__(
        self,
        live: LiveSessions,
        tunes: Tunes,
        structure: Structure,
        previews: Previews,
        observer: SessionObserver,
        asset_dir: Path | None = None,
    ) -> None:
        self._live = live
        self._asset_dir = asset_dir
        self._observer = observer
        self._tunes = tunes
        self._structure = structure
        self._previews = previews

    async def handle_text(self, connection: Connection, text: str) -> None:
        try:
            # The connection enforced the size limit already; the envelope checks everything else.
            message = envelope.parse_message(text, max_bytes=len(text) * 4 + 1)
        except RemoteProtocolError as error:
            send(connection, envelope.error_response(error, envelope.correlation_id_of(text)))
            return
        if not isinstance(message, envelope.Request):
            not_a_request = RemoteProtocolError(
                ErrorCode.BAD_ENVELOPE, '/type: a client sends only messages of type "request"', "/type"
            )
            echoed = message.correlation_id if isinstance(message, envelope.Response) else None
            send(connection, envelope.error_response(not_a_request, echoed))
            return
        correlation_id = message.correlation_id
        try:
            try:
                action = envelope.parse_action(message, context=self._live.context)
            except RemoteProtocolError as error:
                stamps = envelope.stamps_of(message)
                self._tunes.refuse_stamps(connection, message.payload.get("session_id"), stamps)
                raise Refusal(error, stamps) from None
            response = await self._run(connection, action, correlation_id)
        except Refusal as refusal:
            send(connection, refusal.response(correlation_id))
            return
        except RemoteProtocolError as error:
            send(connection, envelope.error_response(error, correlation_id))
            return
        except StoreFull:
            # Nothing of the change is kept (the store took it back and StoreReverts told everyone); the daemon runs on.
            log.warning("%s not stored: the disk under the store is full", message.action)
            send(connection, envelope.error_response(disk_full(), correlation_id))
            return
        except StoreError:
            raise  # the store cannot write: the daemon stops rather than answer without durability
        except Exception as exc:
            # A bug on this side must not take the connection (or the daemon) down: the client gets `internal`.
            log.exception("internal error handling %s", message.action)
            internal = RemoteProtocolError(ErrorCode.INTERNAL, f"internal error: {type(exc).__name__}")
            send(connection, envelope.error_response(internal, correlation_id))
            return
        if response is not None:
            send(connection, response)

    def refuse(self, connection: Connection, error: RemoteProtocolError, head: MessageHead) -> None:
        """A message refused unread (too large, rate limited): the error names what could be read of it, and
        its stamps count as processed (S6) as for any refusal, so the client drops the values it masks."""
        stamps = list(head.stamps)
        if stamps:
            self._tunes.refuse_stamps(connection, head.session_id, stamps)
        send(connection, Refusal(error, stamps).response(head.correlation_id))

    async def _run(self, connection: Connection, action: envelope.Action, cid: str | None) -> envelope.Response | None:
        if isinstance(action, envelope.GetPipeline):
            return queries.getpipeline(self._live, action, cid)
        if isinstance(action, envelope.ListSessions):
            return queries.listsessions(self._live, cid)
        if isinstance(action, envelope.CreateSession):
            return await self._structure.createsession(action, cid)
        if isinstance(action, envelope.DestroySession):
            return await self._structure.destroysession(action, cid)
        if isinstance(action, envelope.TuneNode):
            response = await self._tunes.tunenode(connection, action, cid)  # a refused tune raises
            self._observer.tunes_applied(action.session_id, 1)
            return response
        if isinstance(action, envelope.ApplyBatch):
            response = await self._tunes.applybatch(connection, action, cid)
            self._observer.tunes_applied(action.session_id, sum(isinstance(op, envelope.TuneNode) for op in action.operations))
            return response
        if isinstance(action, envelope.Take):
            response = await self._tunes.take(connection, action, cid)
            self._observer.tunes_applied(action.session_id, 1)
            return response
        if isinstance(action, (envelope.GetPreview, envelope.SubscribePreview, envelope.UnsubscribePreview)):
            return self._previews.handle(connection, action, cid)
        if isinstance(action, (envelope.AddNode, envelope.RemoveNode, envelope.Connect, envelope.Disconnect)):
            return await self._structure.change(action, cid)
        if isinstance(action, envelope.GetSchema):
            return pipeline_files.getschema(cid)
        if isinstance(action, envelope.ExportPipeline):
            return pipeline_files.exportpipeline(self._live, action, cid)
        if isinstance(action, envelope.ParsePipeline):
            return pipeline_files.parsepipeline(action, cid)
        if isinstance(action, envelope.ListExamples):
            return pipeline_files.listexamples(cid)
        if isinstance(action, envelope.ListAssets):
            return await assets.listassets(self._asset_dir, cid)
        raise LocalProtocolError(f"no handler for {type(action).__name__}")


def send(connection: Connection, message: envelope.Response | envelope.Event) -> None:
    connection.send(envelope.serialize(message))
