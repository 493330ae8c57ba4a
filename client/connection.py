"""The trio client: one WebSocket connection at a time, reconnecting with a new nonce.

::

    async with open_client("ws://127.0.0.1:4545/api/v1/control") as client:
        await client.get_pipeline("default")
        await client.tune("default", "comp", {"layers": {"in_1": {"opacity": 0.4}}})
        async for event in client.events():
            print(event.name, event.shown)

How it keeps PROTOCOL.md section 5:

- Each connection has a new nonce (UUID v4); revs count per node from 1 for
  each nonce. A tune is stamped and sent under one lock, so revs reach the
  server in order (rule S2 refuses a rev that is not above the last one).
- Every ``nodeparamschanged`` / ``nodeviewdataupdated`` goes through the
  masking rules (:mod:`compositord.client.session_state`); an ``error`` that
  names one of our revs drops that rev's pending values.
- When the connection drops: callers waiting for an answer get
  :class:`ConnectionLost`; the client reconnects (backoff), takes a new nonce
  (pending values stay masked under the old one, so what it shows does not
  flicker), resyncs every session it knows with ``getpipeline`` FIRST, drops
  the pending values the server had processed under the old nonce (its
  ``acks``/``retired_acks``, rule C4 in :mod:`compositord.protocol.causal`),
  re-stamps and re-sends only the rest (``tunenodeasync`` with a correlation
  id, so errors come back), and only then lets new requests through.

Bounded: at most ``max_in_flight`` requests wait for answers, the event buffer
drops its oldest event when full (state events carry whole states), and the
table of async tunes whose errors may still come back forgets its oldest entry.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, overload

import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, HandshakeError, WebSocketConnection, open_websocket_url

from compositord.client.errors import (
    ClientClosed,
    CompositordError,
    ConnectFailed,
    ConnectionLost,
    RequestTimedOut,
    UnexpectedResponse,
)
from compositord.client.events import RESYNCED, ClientEvent, EventBuffer, EventStream
from compositord.client.session_state import SessionStates
from compositord.protocol import envelope, frames, pcm
from compositord.protocol.causal import PARAMS_CHANNEL, Stamp, leaves_to_patch, strip_private
from compositord.protocol.envelope import (
    PATCH,
    UPDATE,
    Action,
    AddNode,
    ApplyBatch,
    BatchOperation,
    Connect,
    CreateSession,
    DestroySession,
    Disconnect,
    ErrorReply,
    Event,
    GetPipeline,
    ListSessions,
    RemoveNode,
    Response,
    Take,
    TuneNode,
)
from compositord.protocol.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from compositord.protocol.params import validate_transition_patch
from compositord.protocol.scenes import AnimateSpec, parse_animate

log = logging.getLogger(__name__)

# Every action but a tune: what the daemon answers with a response (a tune is answered with its stamp).
_RepliedAction = (
    envelope.GetPipeline
    | envelope.ListSessions
    | envelope.CreateSession
    | envelope.DestroySession
    | envelope.AddNode
    | envelope.RemoveNode
    | envelope.Connect
    | envelope.Disconnect
    | envelope.ApplyBatch
    | envelope.GetPreview
    | envelope.SubscribePreview
    | envelope.UnsubscribePreview
)

CLOSE_NORMAL = 1000
# Statuses after which trying again cannot help: wrong token, origin refused, no such endpoint.
PERMANENT_REFUSALS = frozenset({401, 403, 404})


@dataclass(frozen=True)
class ClientOptions:
    token: str | None = None
    reconnect: bool = True
    resend_pending: bool = True  # PROTOCOL.md section 5: re-send (default) or drop pending values on reconnect
    connect_timeout: float = 10.0
    request_timeout: float = 30.0
    event_buffer: int = 1024
    max_in_flight: int = 256
    max_async_tracked: int = 4096
    reconnect_delay: float = 0.05
    reconnect_delay_max: float = 2.0
    max_message_size: int = 32 * 1024 * 1024


@dataclass
class ClientStatistics:
    connections: int = 0  # successful connects, the first one included
    reconnect_attempts: int = 0
    events_dropped: int = 0
    malformed_messages: int = 0
    resent_messages: int = 0


@dataclass
class _Waiter:
    """A caller waiting for the response with one correlation id."""

    session_id: str | None
    done: trio.Event = dataclasses.field(default_factory=trio.Event)
    response: Response | None = None
    failure: BaseException | None = None


class _Gate:
    """Up while a connection is ready for requests; waiters wake on every change."""

    def __init__(self) -> None:
        self.up = False
        self._changed = trio.Event()

    def set(self, up: bool) -> None:
        self.up = up
        self._changed.set()
        self._changed = trio.Event()

    async def wait_changed(self) -> None:
        await self._changed.wait()


@asynccontextmanager
async def open_client(url: str, *, token: str | None = None, **options: Any) -> AsyncIterator[Client]:
    """Connect to ``url`` (``ws://HOST:PORT/api/v1/control``); raises :class:`ConnectFailed` if the first connect fails.

    ``options`` are the fields of :class:`ClientOptions`.
    """
    settings = ClientOptions(token=token, **options)
    try:
        async with trio.open_nursery() as nursery:
            client = Client(url, settings, nursery)
            try:
                await client._start()
                yield client
            finally:
                await client.aclose()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The nursery is ours, not the caller's: hand back the one real exception, as trio-websocket does.
        real = [e for e in _leaves(group) if not isinstance(e, trio.Cancelled)]
        if len(real) == 1:
            raise real[0] from None
        raise


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


class Client:
    """Use :func:`open_client`; the constructor does no I/O."""

    def __init__(self, url: str, options: ClientOptions, nursery: trio.Nursery) -> None:
        self.url = url
        self.options = options
        self._nursery = nursery
        self._states = SessionStates()
        self._events = EventBuffer(options.event_buffer)
        self._waiters: dict[str, _Waiter] = {}
        self._async_tunes: OrderedDict[str, str] = OrderedDict()  # correlation id -> session id
        self._in_flight = trio.Semaphore(options.max_in_flight)
        self._send_lock = trio.Lock()
        self._gate = _Gate()
        self._ws: WebSocketConnection | None = None
        self._ws_ended = trio.Event()
        self._correlation_ids = itertools.count(1)
        self._closed = False
        self._failure: BaseException | None = None
        self.stats = ClientStatistics()

    # ------------------------------------------------------------------ public API

    @property
    def nonce(self) -> str:
        """The ``_sender`` of this connection's stamps (new at every reconnect)."""
        return self._states.nonce

    @property
    def connected(self) -> bool:
        return self._gate.up

    def statistics(self) -> ClientStatistics:
        self.stats.events_dropped = self._events.dropped
        return dataclasses.replace(self.stats)

    def shown(self, session_id: str, node_id: str, channel: str = PARAMS_CHANNEL) -> Any:
        """What this client should show for a node: the server's state with its own pending values over it."""
        return strip_private(self._states.shown(session_id, node_id, channel))

    def pending(self, session_id: str, node_id: str, channel: str = PARAMS_CHANNEL) -> dict[str, list[tuple[int, Any]]]:
        """The pending values of a node: ``{pointer: [(rev, value), ...]}``, oldest first; the last one shows."""
        return {ptr: list(entries) for ptr, entries in self._states.session(session_id).mask(node_id, channel).pending.items()}

    def events(self) -> EventStream:
        """Every event, in order, with masking applied; ends when the client closes. One consumer at a time.

        Cancelling a wait for the next event loses nothing (unlike an async generator).
        """
        return EventStream(self._events)

    async def get_pipeline(self, session_id: str) -> Mapping[str, Any]:
        """The session's nodes, params, view data and connections; also resyncs what :meth:`shown` says."""
        response = await self._request(GetPipeline(session_id), "pipeline")
        return response.payload

    async def list_sessions(self) -> list[Mapping[str, Any]]:
        response = await self._request(ListSessions(), "sessionslisted")
        return list(response.payload.get("sessions", []))

    async def create_session(self, name: str, pipeline: Mapping[str, Any]) -> str:
        """Create a session from a pipeline document; returns its id."""
        response = await self._request(CreateSession(name, pipeline), "sessioncreated")
        return str(response.payload["session_id"])

    async def destroy_session(self, session_id: str) -> None:
        await self._request(DestroySession(session_id), "sessiondestroyed")
        self._states.forget_session(session_id)

    async def add_node(self, session_id: str, node_id: str, kind: str, params: Mapping[str, Any] | None = None) -> None:
        await self._request(AddNode(session_id, node_id, kind, dict(params or {})), "success")

    async def remove_node(self, session_id: str, node_id: str) -> None:
        await self._request(RemoveNode(session_id, node_id), "success")

    async def connect(self, session_id: str, from_node: str, from_pin: str, to_node: str, to_pin: str) -> None:
        await self._request(Connect(session_id, from_node, from_pin, to_node, to_pin), "success")

    async def disconnect(self, session_id: str, from_node: str, from_pin: str, to_node: str, to_pin: str) -> None:
        await self._request(Disconnect(session_id, from_node, from_pin, to_node, to_pin), "success")

    async def get_preview(self, session_id: str, node_id: str) -> tuple[bytes, Mapping[str, Any]]:
        """The latest JPEG of a ``sink::preview`` node and the ``preview`` payload (size, frame number, times)."""
        response = await self._request(envelope.GetPreview(session_id, node_id), "preview")
        return base64.b64decode(response.payload["data"]), response.payload

    async def subscribe_preview(self, session_id: str, node_id: str) -> None:
        """``nodepreviewupdated`` events for the node arrive in :meth:`events` (until unsubscribed or
        disconnected: a subscription does not survive a reconnect, subscribe again on ``resynced``)."""
        await self._request(envelope.SubscribePreview(session_id, node_id), "success")

    async def unsubscribe_preview(self, session_id: str, node_id: str) -> None:
        await self._request(envelope.UnsubscribePreview(session_id, node_id), "success")

    async def tune(
        self,
        session_id: str,
        node_id: str,
        patch: Mapping[str, Any],
        *,
        replace: bool = False,
        sync: bool = True,
        animate: AnimateSpec | Mapping[str, Any] | None = None,
        transition: Mapping[str, Any] | None = None,
    ) -> Stamp:
        """Change a node's params: a merge patch (``PatchParams``), or the whole params with ``replace=True``.

        The value shows at once (masked) and the message is stamped. With
        ``sync`` this waits until the server stored it and raises
        :class:`CompositordError` if it refused it; without, it returns once
        sent and a refusal only drops the pending value (and shows up as the
        shown state falling back). ``animate`` (``{"duration_ms", "easing"}``,
        a compositor's params): the numbers it changes move there over the
        duration (PROTOCOL.md section 3, animated edits). ``transition`` (a patch of a compositor's
        ``transition``): how the change of ``program_scene`` this tune makes is shown, this once; the
        params keep their own (``_transition``). Returns the stamp.
        """
        body = strip_private(dict(patch))
        spec = parse_animate(animate, "/animate") if isinstance(animate, Mapping) else animate
        once = validate_transition_patch(transition, "/transition") if transition is not None else None
        operation = TuneNode(session_id, node_id, UPDATE if replace else PATCH, body, None, sync, animate=spec, transition=once)
        stamp: Stamp = await self._request(operation, "success" if sync else None)
        return stamp

    async def set_program_scene(
        self,
        session_id: str,
        node_id: str,
        scene: str,
        *,
        transition: Mapping[str, Any] | None = None,
        keep_transition: bool = True,
        sync: bool = True,
    ) -> Stamp:
        """Put a compositor's scene on program; ``transition`` (``{"kind", "duration_ms", "easing",
        "direction"}``, a patch of the params' ``transition``) is how it is shown. It stays the default for
        the next change, or with ``keep_transition=False`` counts for this change only (a cut to program
        that leaves the fade set up for the next take)."""
        patch: dict[str, Any] = {"program_scene": scene}
        once = None
        if transition is not None and keep_transition:
            patch["transition"] = dict(transition)
        else:
            once = transition
        return await self.tune(session_id, node_id, patch, sync=sync, transition=once)

    async def set_preview_scene(self, session_id: str, node_id: str, scene: str | None, *, sync: bool = True) -> Stamp:
        """Put a compositor's scene on its ``preview`` output (None: nothing there)."""
        return await self.tune(session_id, node_id, {"preview_scene": scene}, sync=sync)

    async def take(self, session_id: str, node_id: str, *, transition: Mapping[str, Any] | None = None) -> Stamp:
        """``take``: the preview scene goes to program (with ``transition``, or the params' own) and the
        program scene to preview, as one change the server makes from the params it holds. Shown at once
        as predicted from this client's view of the params; waits until stored. Returns the stamp."""
        stamp: Stamp = await self._request(Take(session_id, node_id, None, transition), "success")
        return stamp

    async def apply_batch(self, session_id: str, operations: Sequence[BatchOperation]) -> int:
        """Apply operations together, all or none (a batch is always atomic); a :class:`TuneNode` without a
        stamp is stamped and masked here.

        Returns the number of operations applied.
        """
        response = await self._request(ApplyBatch(session_id, tuple(operations)), "batchapplied")
        return int(response.payload.get("applied", len(operations)))

    async def push_frame(
        self,
        node_id: str,
        width: int,
        height: int,
        pixel_format: str,
        data: bytes | bytearray | memoryview | Any,
        pts_us: int = 0,
    ) -> None:
        """Send one frame to the ``video::push`` node ``node_id`` (PROTOCOL.md section 6); fire and forget.

        The header names the node by a hash of its id only, so the frame goes to
        that node in every session that has one. ``data`` (bytes-like or a NumPy
        array) holds the tightly packed frame: RGBA8 (straight alpha) ``4*w*h``
        bytes, NV12 / I420 ``w*h*3/2``. The daemon answers only a refused frame,
        with an ``error`` event (see ``events()``); the node keeps its last good
        frame. A shape or byte count that cannot be right raises
        :class:`LocalProtocolError` before anything is sent.
        """
        header = frames.pack_frame_header(node_id, width, height, pixel_format, pts_us)
        payload = _frame_bytes(data)
        expected = frames.frame_size(pixel_format, width, height)
        if len(payload) != expected:
            raise LocalProtocolError(f"{width}x{height} {pixel_format} needs {expected} bytes, got {len(payload)}")
        try:
            with trio.fail_after(self.options.request_timeout):
                ws = await self._wait_ready()
                async with self._send_lock:
                    await ws.send_message(header + payload)
        except trio.TooSlowError as exc:
            raise RequestTimedOut(f"could not send a frame within {self.options.request_timeout} s") from exc
        except ConnectionClosed as exc:
            raise ConnectionLost("the connection dropped while sending a frame") from exc

    async def push_audio(
        self,
        node_id: str,
        samples: Any,
        sample_rate: int,
        channels: int | None = None,
        pts_us: int = 0,
        *,
        sample_format: str | None = None,
    ) -> None:
        """Send PCM to the ``audio::push`` node ``node_id`` (PROTOCOL.md section 6.1); fire and forget.

        ``samples`` is a NumPy array, ``(count,)`` mono or ``(count, channels)``
        interleaved, of int16 (s16le), int32 (s32le) or float32 (f32le, in
        [-1, 1]); or bytes-like, interleaved little-endian, with ``sample_format``
        and ``channels`` given. ``pts_us`` is the first sample's time on the
        client's clock: consecutive calls should continue it (``pts_us +
        count * 1_000_000 / sample_rate``); a jump is a gap the node fills with
        silence. Sound longer than one message may hold (200 ms) goes as several
        messages with consecutive pts. The daemon answers only a refused message,
        with an ``error`` event; a format the header cannot carry raises
        :class:`LocalProtocolError` before anything is sent.
        """
        data, sample_format, channels = _pcm_bytes(samples, channels, sample_format)
        frame_bytes = channels * pcm.BYTES_PER_SAMPLE[sample_format]
        total = len(data) // frame_bytes
        if total == 0:
            raise LocalProtocolError("no samples to push")
        step = pcm.max_sample_count(sample_rate) if sample_rate in pcm.SAMPLE_RATES else total
        messages = []
        for start in range(0, total, step):
            count = min(step, total - start)
            header = pcm.pack_audio_header(
                node_id, sample_format, channels, sample_rate, count, pts_us + round(start * 1_000_000 / sample_rate)
            )
            messages.append(header + data[start * frame_bytes : (start + count) * frame_bytes])
        try:
            with trio.fail_after(self.options.request_timeout):
                ws = await self._wait_ready()
                async with self._send_lock:
                    for message in messages:
                        await ws.send_message(message)
        except trio.TooSlowError as exc:
            raise RequestTimedOut(f"could not send audio within {self.options.request_timeout} s") from exc
        except ConnectionClosed as exc:
            raise ConnectionLost("the connection dropped while sending audio") from exc

    async def aclose(self) -> None:
        """Close the connection (1000) and stop reconnecting; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._gate.set(False)
        self._fail_waiters(ClientClosed("the client was closed"))
        self._events.close()
        ws = self._ws
        if ws is not None:
            with trio.move_on_after(1) as scope:
                scope.shield = True
                try:
                    await ws.aclose(CLOSE_NORMAL, "client closing")
                except Exception:  # closing a broken connection: nothing left to do
                    log.debug("closing the websocket failed", exc_info=True)

    # ------------------------------------------------------------------ requests

    def _correlation_id(self) -> str:
        return f"c{next(self._correlation_ids)}"

    def _stamp_operation(self, operation: Any) -> Any:
        """Stamp and mask an unstamped tune or take (call with the send lock held, so revs go out in order)."""
        if isinstance(operation, Take) and operation.stamp is None:
            return dataclasses.replace(operation, stamp=self._stamp_take(operation))
        if not isinstance(operation, TuneNode) or operation.stamp is not None:
            return operation
        state = self._states.session(operation.session_id)
        if operation.mode == UPDATE:
            stamp = state.edit_replace(operation.node_id, operation.params)
        else:
            stamp = state.edit_patch(operation.node_id, operation.params)
        return dataclasses.replace(operation, stamp=stamp)

    def _stamp_take(self, take: Take) -> Stamp:
        """A take's stamp, its outcome masked as this client predicts it from the params it shows."""
        state = self._states.session(take.session_id)
        shown = state.shown(take.node_id)
        preview = shown.get("preview_scene") if isinstance(shown, Mapping) else None
        if preview is None:
            return state.stamp_for(take.node_id)  # nothing to predict: the server's answer will say
        predicted: dict[str, Any] = {"program_scene": preview, "preview_scene": shown.get("program_scene")}
        if shown.get("transition_position") is not None:
            predicted["transition_position"] = None  # the server's take clears the T-bar
        if take.transition is not None:
            predicted["transition"] = dict(take.transition)
        return state.edit_patch(take.node_id, predicted)

    async def _wait_ready(self) -> WebSocketConnection:
        while True:
            if self._closed:
                raise self._failure if isinstance(self._failure, ConnectFailed) else ClientClosed("the client is closed")
            if self._gate.up and self._ws is not None:
                return self._ws
            await self._gate.wait_changed()

    @overload
    async def _request(self, action: TuneNode | Take, expect: str | None) -> Stamp: ...
    @overload
    async def _request(self, action: _RepliedAction, expect: str) -> Response: ...
    async def _request(self, action: Action, expect: str | None) -> Stamp | Response | None:
        """Send ``action`` with a correlation id; wait for the answer unless ``expect`` is None (async tune)."""
        try:
            return await self._request_once(action, expect)
        except trio.TooSlowError as exc:
            raise RequestTimedOut(f"no answer to {type(action).__name__} within {self.options.request_timeout} s") from exc

    async def _request_once(self, action: Action, expect: str | None) -> Stamp | Response | None:
        with trio.fail_after(self.options.request_timeout):
            async with self._in_flight:
                while True:
                    ws = await self._wait_ready()
                    async with self._send_lock:
                        # the connection may have changed while we waited for the lock
                        if not self._gate.up or ws is not self._ws:
                            continue
                        correlation_id = self._correlation_id()
                        action = self._stamp_operation(action)
                        if isinstance(action, ApplyBatch):
                            action = dataclasses.replace(
                                action, operations=tuple(self._stamp_operation(op) for op in action.operations)
                            )
                        session_id = getattr(action, "session_id", None)
                        waiter = None
                        if expect is not None:
                            waiter = self._waiters[correlation_id] = _Waiter(session_id)
                        else:
                            self._remember_async(correlation_id, session_id)
                        try:
                            await ws.send_message(envelope.serialize(action.to_request(correlation_id)))
                        except ConnectionClosed as exc:
                            self._waiters.pop(correlation_id, None)
                            raise ConnectionLost("the connection dropped while sending") from exc
                        break
                if waiter is None:
                    return action.stamp if isinstance(action, (TuneNode, Take)) else None
                try:
                    await waiter.done.wait()
                finally:
                    self._waiters.pop(correlation_id, None)
        if waiter.failure is not None:
            raise waiter.failure
        response = waiter.response
        assert response is not None
        if response.action == "error":
            raise CompositordError.from_reply(ErrorReply.from_response(response))
        if response.action != expect:
            raise UnexpectedResponse(f"expected {expect!r}, got {response.action!r}")
        if isinstance(action, (TuneNode, Take)):
            return action.stamp
        return response

    def _remember_async(self, correlation_id: str, session_id: str | None) -> None:
        if session_id is None:
            return
        self._async_tunes[correlation_id] = session_id
        while len(self._async_tunes) > self.options.max_async_tracked:
            self._async_tunes.popitem(last=False)

    def _fail_waiters(self, failure: BaseException) -> None:
        for waiter in self._waiters.values():
            if not waiter.done.is_set():
                waiter.failure = failure
                waiter.done.set()

    # ------------------------------------------------------------------ incoming

    def _handle_text(self, text: str | bytes) -> None:
        if isinstance(text, bytes):
            return  # binary frames are pushed video (section 6): nothing a control client reads
        try:
            message = envelope.parse_message(text, strict=False)  # our server's text: the envelope is checked
            if isinstance(message, Response):
                self._handle_response(message)
            elif isinstance(message, Event):
                self._handle_event(message)
            else:
                raise RemoteProtocolError(ErrorCode.BAD_ENVELOPE, "a server does not send requests", "/type")
        except RemoteProtocolError as error:
            self.stats.malformed_messages += 1
            log.warning("ignoring a malformed message from the server: %s", error)

    def _handle_response(self, response: Response) -> None:
        correlation_id = response.correlation_id
        waiter = self._waiters.get(correlation_id) if correlation_id is not None else None
        session_id = waiter.session_id if waiter is not None else self._async_tunes.pop(correlation_id or "", None)
        try:
            if response.action == "error":
                self._apply_refusal(ErrorReply.from_response(response), session_id)
            elif response.action == "pipeline":
                # Applied here, in message order: a caller woken later must not lay this
                # state over newer events that the reader has handled meanwhile.
                self._states.apply_pipeline(response.payload)
        except RemoteProtocolError as error:
            if waiter is not None and not waiter.done.is_set():
                waiter.failure = UnexpectedResponse(f"malformed {response.action!r} response: {error}")
                waiter.done.set()
            raise
        if waiter is not None and not waiter.done.is_set():
            waiter.response = response
            waiter.done.set()

    def _apply_refusal(self, reply: ErrorReply, session_id: str | None) -> None:
        if session_id is None:
            return
        for node_id, stamp in reply.refused_stamps():
            if stamp.sender == self._states.nonce:
                self._states.refused(session_id, node_id, stamp.rev)
                self._events.put_nowait(
                    ClientEvent(
                        "refused",
                        {"code": reply.code, "message": reply.message, "path": reply.path, "rev": stamp.rev},
                        session_id,
                        node_id,
                        PARAMS_CHANNEL,
                        self.shown(session_id, node_id),
                    )
                )

    def _handle_event(self, event: Event) -> None:
        session_id, node_id, channel, shown = self._states.apply_event(event)
        self._events.put_nowait(ClientEvent(event.event, event.payload, session_id, node_id, channel, shown, event))

    # ------------------------------------------------------------------ connection lifetime

    async def _connect_once(self) -> WebSocketConnection:
        """Open a connection held by its own task (so a failed handshake raises here, not in the nursery)."""
        try:
            ws: WebSocketConnection = await self._nursery.start(self._hold_connection)
        except ConnectionRejected as exc:
            raise ConnectFailed(
                f"{self.url}: the server refused the connection (HTTP {exc.status_code})", exc.status_code
            ) from exc
        except (HandshakeError, OSError, trio.TooSlowError) as exc:
            raise ConnectFailed(f"{self.url}: cannot connect: {exc!r}") from exc
        self.stats.connections += 1
        return ws

    async def _hold_connection(self, *, task_status: trio.TaskStatus[WebSocketConnection]) -> None:
        """One connection's lifetime: open it, read every message, and report its end."""
        headers = [(b"Authorization", f"Bearer {self.options.token}".encode())] if self.options.token else None
        ended = trio.Event()
        started = False
        try:
            async with open_websocket_url(
                self.url,
                extra_headers=headers,
                max_message_size=self.options.max_message_size,
                connect_timeout=self.options.connect_timeout,
                disconnect_timeout=1.0,
            ) as ws:
                self._ws, self._ws_ended = ws, ended
                started = True
                task_status.started(ws)
                try:
                    while True:
                        self._handle_text(await ws.get_message())
                except ConnectionClosed:
                    pass
        except Exception:
            if not started:
                raise
            log.debug("the connection ended with an error", exc_info=True)  # the reconnect handles it
        finally:
            if started:
                self._gate.set(False)
                self._fail_waiters(ConnectionLost("the connection dropped before the answer came"))
                ended.set()

    async def _start(self) -> None:
        await self._connect_once()
        self._gate.set(True)
        self._nursery.start_soon(self._run)

    async def _run(self) -> None:
        reconnected = False
        while True:
            ws, ended = self._ws, self._ws_ended
            assert ws is not None
            if reconnected:
                await self._resync_and_resend(ws)
            await ended.wait()
            if self._closed or not self.options.reconnect:
                self._closed = True
                self._events.close()
                return
            if not await self._reconnect():
                return
            self._states.reconnected()
            reconnected = True

    async def _reconnect(self) -> bool:
        delay = self.options.reconnect_delay
        while not self._closed:
            self.stats.reconnect_attempts += 1
            try:
                await self._connect_once()
                return True
            except ConnectFailed as exc:
                if exc.status in PERMANENT_REFUSALS:
                    log.error("giving up reconnecting: %s", exc)
                    self._failure = exc
                    self._closed = True
                    self._events.close()
                    return False
                log.info("reconnect failed, retrying in %.2f s: %s", delay, exc)
            await trio.sleep(delay)
            delay = min(delay * 2, self.options.reconnect_delay_max)
        return False

    async def _resync_and_resend(self, ws: WebSocketConnection) -> None:
        """After a reconnect: resync every session, re-send what the server had not processed, open the gate (C4)."""
        try:
            for session_id in self._states.session_ids():
                correlation_id = self._correlation_id()
                waiter = self._waiters[correlation_id] = _Waiter(session_id)
                await ws.send_message(envelope.serialize(GetPipeline(session_id).to_request(correlation_id)))
                with trio.fail_after(self.options.request_timeout):
                    await waiter.done.wait()
                self._waiters.pop(correlation_id, None)
                if isinstance(waiter.failure, UnexpectedResponse):
                    raise waiter.failure
                response = waiter.response
                if response is None:  # the connection dropped again; the next reconnect starts over
                    return
                if response.action == "pipeline":  # applied by the reader already
                    self._events.put_nowait(ClientEvent(RESYNCED, response.payload, session_id))
                else:  # the session is gone
                    self._states.forget_session(session_id)
                    self._events.put_nowait(ClientEvent(RESYNCED, {"session_id": session_id, "gone": True}, session_id))
            async with self._send_lock:
                # Only now, with every session resynced: what the old nonce's acks do not cover.
                resend = self._states.take_resend()
                if not self.options.resend_pending:
                    resend = {}  # dropped: what they showed falls back to the server's state
                for message in self._restamp(resend):
                    correlation_id = self._correlation_id()
                    self._remember_async(correlation_id, message.session_id)
                    await ws.send_message(envelope.serialize(message.to_request(correlation_id)))
                    self.stats.resent_messages += 1
                self._gate.set(True)
        except (ConnectionClosed, trio.TooSlowError):
            await ws.aclose()
        except UnexpectedResponse as error:
            log.warning("bad pipeline during resync: %s; reconnecting", error)
            await ws.aclose()

    def _restamp(self, resend: dict[str, dict[str, list[dict[str, Any]]]]) -> list[TuneNode]:
        """Stamp (and mask) the values to re-send under the current nonce, one message per original group."""
        messages: list[TuneNode] = []
        for session_id, nodes in resend.items():
            state = self._states.session(session_id)
            for node_id, groups in nodes.items():
                for values in groups:
                    if "" in values:
                        document = values[""]
                        messages.append(
                            TuneNode(session_id, node_id, UPDATE, document, state.edit_replace(node_id, document), False)
                        )
                        values = {ptr: value for ptr, value in values.items() if ptr != ""}
                    if values:
                        patch = leaves_to_patch(values)
                        messages.append(TuneNode(session_id, node_id, PATCH, patch, state.edit_patch(node_id, patch), False))
        return messages


_PCM_DTYPES = {("i", 2): "s16le", ("i", 4): "s32le", ("f", 4): "f32le"}


def _pcm_bytes(samples: Any, channels: int | None, sample_format: str | None) -> tuple[bytes, str, int]:
    """Interleaved little-endian PCM bytes, its format and channel count, from an array or bytes-like samples."""
    dtype = getattr(samples, "dtype", None)
    if dtype is not None:  # a NumPy array: its dtype and shape say the format and the channels
        found = _PCM_DTYPES.get((dtype.kind, dtype.itemsize))
        if found is None:
            raise LocalProtocolError(f"samples of dtype {dtype} cannot be pushed; use int16, int32 or float32")
        if sample_format is not None and sample_format != found:
            raise LocalProtocolError(f"samples of dtype {dtype} are {found}, not {sample_format}")
        if samples.ndim not in (1, 2):
            raise LocalProtocolError(f"samples must be (count,) or (count, channels), not {samples.shape}")
        shape_channels = 1 if samples.ndim == 1 else int(samples.shape[1])
        if channels is not None and channels != shape_channels:
            raise LocalProtocolError(f"samples of shape {samples.shape} have {shape_channels} channel(s), not {channels}")
        if dtype.byteorder == ">":
            samples = samples.astype(dtype.newbyteorder("<"))
        channels, sample_format = shape_channels, found
        data = bytes(samples.tobytes())  # C order: interleaved
    else:
        if sample_format is None or channels is None:
            raise LocalProtocolError("bytes-like samples need sample_format and channels")
        data = _frame_bytes(samples)
    if sample_format not in pcm.SAMPLE_FORMATS:
        raise LocalProtocolError(f"unknown sample format {sample_format!r}; known: {', '.join(pcm.SAMPLE_FORMATS)}")
    if channels not in pcm.CHANNELS:
        raise LocalProtocolError(f"channels must be 1 or 2, got {channels}")
    frame_bytes = channels * pcm.BYTES_PER_SAMPLE[sample_format]
    if len(data) % frame_bytes:
        raise LocalProtocolError(f"{len(data)} bytes are not whole samples of {channels} channel(s) {sample_format}")
    return data, sample_format, channels


def _frame_bytes(data: Any) -> bytes:
    """The bytes of a frame given as bytes, a buffer or a NumPy array (copied once, contiguous)."""
    if isinstance(data, bytes):
        return data
    tobytes = getattr(data, "tobytes", None)  # NumPy arrays, memoryviews: C order
    if tobytes is not None:
        return bytes(tobytes())
    return bytes(data)
