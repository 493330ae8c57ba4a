"""The session logic as the rest of the daemon sees it: one facade over the concerns of this package.

``SessionService`` is the control side's ``Dispatcher`` (every connection's
requests, binary frames and closes) and owns the engines, which it knows only
through ``engine.api``: it makes one per session with its ``EngineFactory`` and
hands each the same ``EngineEvents`` sink. The work itself is done by
``dispatch`` (parse, route, error replies), ``tunes`` (tunes and params acks),
``structure`` (session and node changes), ``previews``, ``pushed_frames``,
``pushed_audio`` (binary messages, told apart by their magic),
``engine_events`` (what engines report, as protocol events) and ``queries``;
``live`` holds what they share.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from compositord.daemon.config import Limits
from compositord.daemon.control.connection import Connection
from compositord.daemon.control.hub import Hub
from compositord.daemon.engine import api
from compositord.daemon.sessions import health, queries
from compositord.daemon.sessions.budgets import Budgets, pipeline_of
from compositord.daemon.sessions.dispatch import Dispatch
from compositord.daemon.sessions.engine_events import EngineEventHandler
from compositord.daemon.sessions.inline_images import InlineImages
from compositord.daemon.sessions.live import LiveSessions
from compositord.daemon.sessions.observer import NoObserver, SessionObserver
from compositord.daemon.sessions.previews import Previews
from compositord.daemon.sessions.pushed_audio import PushedAudioRouter
from compositord.daemon.sessions.pushed_frames import PushedFrames
from compositord.daemon.sessions.reverts import StoreReverts
from compositord.daemon.sessions.senders import SenderOwners
from compositord.daemon.sessions.structure import Structure
from compositord.daemon.sessions.tunes import Tunes
from compositord.daemon.state.model import SessionRecord
from compositord.daemon.state.store import Store
from compositord.protocol import causal, pcm
from compositord.protocol.budget import BudgetLimits
from compositord.protocol.causal import AckBook
from compositord.protocol.errors import RemoteProtocolError
from compositord.protocol.message_head import MessageHead
from compositord.protocol.params import DAEMON, ValidationContext

log = logging.getLogger(__name__)


class SessionService:
    """The dispatcher of every connection and the owner of every session's engine."""

    def __init__(
        self,
        store: Store,
        hub: Hub,
        engine_factory: api.EngineFactory,
        *,
        retired_acks_grace_s: float = causal.RETIRED_ACKS_GRACE_S,
        max_retired_acks: int = causal.MAX_RETIRED_ACKS,
        observer: SessionObserver | None = None,
        asset_dir: Path | None = None,
        validation_context: ValidationContext = DAEMON,
        budget: BudgetLimits | None = None,
    ) -> None:
        # Rule S7: how long and how many closed senders' params acks getpipeline still reports, per node.
        make_book: Callable[[], AckBook] = functools.partial(
            AckBook, retired_grace_s=retired_acks_grace_s, max_retired=max_retired_acks
        )
        make_book()  # bad settings fail here, at start-up, not at the first tune
        self._hub = hub
        self._engine_factory = engine_factory
        # Inline images (StreamKit's data_base64) go into the asset directory, where engines read assets.
        images = InlineImages(asset_dir)
        budgets = Budgets(budget if budget is not None else Limits().budget())
        self._live = LiveSessions(store, hub, make_book, budgets, context=validation_context, image_data=images.base64_of)
        store.add_revert_listener(StoreReverts(self._live).reverted)  # a full disk: take back what could not be stored
        self._previews = Previews(self._live)
        observer = observer if observer is not None else NoObserver()
        self._engine_events = EngineEventHandler(self._live, self._previews, observer)
        self._tunes = Tunes(self._live, images, SenderOwners(grace_s=retired_acks_grace_s))
        self._pushed_frames = PushedFrames(self._live)
        self._pushed_audio = PushedAudioRouter(self._live)
        structure = Structure(self._live, self.open_session, images)
        self._dispatch = Dispatch(self._live, self._tunes, structure, self._previews, observer, asset_dir)

    # ------------------------------------------------------------------ engines

    @property
    def engines(self) -> dict[str, api.Engine]:
        return {session_id: live.engine for session_id, live in self._live.items()}

    def frame_period(self, session_id: Any) -> float | None:
        """Seconds per output frame of a running session (the hub paces its events by it); None if unknown."""
        live = self._live.get(session_id)
        fps = live.engine.statistics().fps if live is not None else 0
        return 1.0 / fps if fps > 0 else None

    def problems(self) -> list[dict[str, Any]]:
        """What is wrong with the running pipelines (``sessions.health``); [] when all is well."""
        return health.problems(self._live)

    async def open_session(self, record: SessionRecord) -> None:
        """Start the engine of a session that is in the store; returns after its first frame."""
        engine = self._engine_factory(record.copy(), self._engine_events)
        self._live.add(record.session_id, engine)
        engine.start()
        await engine.wait_first_frame()

    async def restore_session(self, record: SessionRecord) -> bool:
        """Start a session the store held at start, if it fits the budgets (returns after its first frame);
        else park it (stored, listed with why, not started: a stored 7680x7680 session must not keep the
        daemon from serving) and return False."""
        budgets = self._live.budgets
        try:
            cost = budgets.check_new(record.session_id, pipeline_of(record.nodes, record.connections), base="", count_path="")
        except RemoteProtocolError as error:
            reason = f"over a budget at start: {error.message}"
            log.error("session %r is not started: %s", record.session_id, reason)
            self._live.park(record.session_id, reason)
            return False
        with budgets.reserve(record.session_id, cost):
            await self.open_session(record)
        return True

    async def stop_all(self, timeout: float) -> None:
        """Stop every engine: all are told at once and waited for together, up to ``timeout`` in all (an
        engine process still running then is killed; the others have finished meanwhile)."""
        stopping = self._live.remove_all()
        for live in stopping:
            live.engine.submit(api.Stop())
        async with trio.open_nursery() as nursery:
            for live in stopping:
                nursery.start_soon(functools.partial(trio.to_thread.run_sync, live.engine.stop, timeout))

    def session_infos(self) -> list[dict[str, Any]]:
        """StreamKit's ``SessionInfo`` of every running session (``GET /api/v1/sessions``)."""
        return queries.session_infos(self._live)

    # ------------------------------------------------------------------ the control side's Dispatcher protocol

    def connection_opened(self, connection: Connection) -> None:
        self._hub.subscribe(connection)

    async def handle_text(self, connection: Connection, text: str) -> None:
        await self._dispatch.handle_text(connection, text)

    def handle_binary(self, connection: Connection, data: bytes) -> None:
        if pcm.is_audio_message(data):
            self._pushed_audio.handle(connection, data)
        else:
            self._pushed_frames.handle(connection, data)

    def refuse(self, connection: Connection, error: RemoteProtocolError, head: MessageHead) -> None:
        self._dispatch.refuse(connection, error, head)

    def connection_closed(self, connection: Connection) -> None:
        self._hub.unsubscribe(connection)
        self._previews.connection_closed(connection)
        self._tunes.connection_closed(connection)
