"""A simulated compositord for the causal rules (PROTOCOL.md section 5): one node, its clients, no network.

Sans-IO: a server made of ``AckBook`` + ``merge_patch`` + a clamping/refusing
validator + a coalescing mailbox per connection (as daemon/control/mailbox.py: a newer
event of the same channel replaces the unsent one and goes to the back),
clients made of ``ClientCausalState``, and per-direction FIFO queues that a
schedule of :class:`Step` delivers in any order across clients. A reconnect
loses whatever was in flight on both directions.

With ``paced=True`` the server holds its events until a ``frame_end`` step
and keeps only the latest per channel, as the daemon's hub does
(docs/PROTOCOL.md section 4, "Pacing"),
while ``error`` replies and ``pipeline`` responses leave at once: a refusal
can overtake the event that acknowledges an earlier rev.

Used by tests/test_causal_properties.py (the properties, checked after every
step) and tests/causal_fixture.py (histories recorded for the JS client).
"""

from __future__ import annotations

import itertools
import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from compositord.protocol import pointer
from compositord.protocol.causal import (
    PARAMS_CHANNEL,
    VIEW_CHANNEL,
    AckBook,
    ClientCausalState,
    Stamp,
    leaves_to_patch,
    merge_patch,
    strip_private,
    take_stamp,
)
from compositord.protocol.errors import ErrorCode, RemoteProtocolError

NODE = "comp"
LIMIT = 10**9  # the model's validator clamps every number above this and refuses negatives
POINTERS = ("/layers/in_0/opacity", "/layers/in_1/opacity", "/width")
MISSING = object()
VALUE_KINDS = ("plain", "clamp", "refuse")

# --------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class Tune:
    stamp: Stamp
    body: dict[str, Any]  # stripped params or patch
    replace: bool = False

    def wire_message(self) -> dict[str, Any]:
        return {**self.body, **self.stamp.to_json()}


@dataclass(frozen=True)
class GetPipeline:
    pass


@dataclass(frozen=True)
class EventMsg:
    channel: str
    data: dict[str, Any]  # state + _sender/_rev (when stamped) + _acks + _seq


@dataclass(frozen=True)
class ErrorMsg:
    stamp: Stamp


@dataclass(frozen=True)
class PipelineMsg:
    params: dict[str, Any]
    view: dict[str, Any]
    retired_acks: dict[str, int] = field(default_factory=dict)  # S7; the seed's server has none


ToServer = Tune | GetPipeline
ToClient = EventMsg | ErrorMsg | PipelineMsg

# --------------------------------------------------------------------------- server


class SimServer:
    """One compositor node, its store (params channel) and its render loop (view channel), rules S1-S7.

    ``sticky_view_stamp=True`` is the seed's server: view data keeps the stamp
    of the last stamped update, also when the server itself changed the layout.
    ``paced=True`` holds events until :meth:`frame_end` (see the module docstring).
    """

    def __init__(self, *, sticky_view_stamp: bool = False, paced: bool = False) -> None:
        self.params: dict[str, Any] = {}
        self.clock = 0.0  # S7's grace period never ends within a history
        self.inputs = 1
        self.params_acks = AckBook()
        self.view_acks = AckBook()
        self.params_seq = 0
        self.view_seq = 0
        self.sticky_view_stamp = sticky_view_stamp
        self.paced = paced
        self.last_view_stamp: Stamp | None = None
        self.outboxes: dict[int, list[ToClient]] = {}
        self.held: dict[int, dict[str, EventMsg]] = {}  # per connection, the latest event of each channel
        self.applied: set[tuple[str, Any]] = set()  # every (pointer, value) a stamped tune brought in
        self.last_written: dict[str, Any] = {}  # per pointer, the value the last applied tune wrote
        self.lost_updates: list[str] = []

    def view(self) -> dict[str, Any]:
        return {"canvas_width": self.params.get("width", 0), "num_layers": self.inputs}

    def open(self, conn: int) -> None:
        self.outboxes[conn] = []
        self.held[conn] = {}

    def close(self, conn: int, sender: str) -> None:
        del self.outboxes[conn]
        del self.held[conn]
        self.params_acks.retire(sender, self.clock)  # S5, S7
        self.view_acks.forget(sender)

    def receive(self, conn: int, message: ToServer) -> None:
        if isinstance(message, GetPipeline):
            self.outboxes[conn].append(
                PipelineMsg(
                    self._data(self.params, None, self.params_acks, self.params_seq),
                    self._data(self.view(), None, self.view_acks, self.view_seq),
                    self.params_acks.retired_as_dict(self.clock),
                )
            )
            return
        stamp, body = take_stamp(message.wire_message())
        assert stamp is not None
        try:
            self.params_acks.check(stamp)
            candidate = body if message.replace else merge_patch(self.params, body)
            candidate = self._validate(candidate)
        except RemoteProtocolError:
            self.params_acks.refuse(stamp)  # S6
            self.outboxes[conn].append(ErrorMsg(stamp))  # a reply: never held
            return
        self.params = candidate  # S1: in arrival order
        for ptr, value in pointer.leaves(body):
            if (ptr, value) in self.applied and self.last_written.get(ptr) != value:
                self.lost_updates.append(f"{ptr}={value} applied again over {self.last_written.get(ptr)} ({stamp})")
            self.last_written[ptr] = value
        self.applied.update(pointer.leaves(body))
        self.params_acks.record(stamp)
        self.params_seq += 1
        self._broadcast(EventMsg(PARAMS_CHANNEL, self._data(self.params, stamp, self.params_acks, self.params_seq)))
        # S4: one frame per update here; the frame applied a stamped update, so view data goes out
        self.view_acks.record(stamp)
        self.last_view_stamp = stamp
        self._emit_view(stamp)

    def add_input(self) -> None:
        """A layout change the server caused (an input was connected)."""
        self.inputs += 1
        self._emit_view(self.last_view_stamp if self.sticky_view_stamp else None)

    def frame_end(self) -> None:
        """The events held during the frame leave (paced server)."""
        for conn, events in self.held.items():
            for event in events.values():
                self._post(conn, event)
            events.clear()

    def _emit_view(self, stamp: Stamp | None) -> None:
        self.view_seq += 1
        self._broadcast(EventMsg(VIEW_CHANNEL, self._data(self.view(), stamp, self.view_acks, self.view_seq)))

    @staticmethod
    def _validate(candidate: dict[str, Any]) -> dict[str, Any]:
        for ptr, value in pointer.leaves(candidate):
            if isinstance(value, int) and value < 0:
                raise RemoteProtocolError(ErrorCode.INVALID_PARAMS, "must be >= 0", ptr)
            if isinstance(value, int) and value > LIMIT:
                candidate = pointer.with_value(candidate, ptr, LIMIT)
        return candidate

    @staticmethod
    def _data(state: dict[str, Any], stamp: Stamp | None, acks: AckBook, seq: int) -> dict[str, Any]:
        data = {**state, "_acks": acks.as_dict(), "_seq": seq}
        if stamp is not None:
            data.update(stamp.to_json())
        return data

    def _broadcast(self, event: EventMsg) -> None:
        for conn in self.outboxes:
            if self.paced:
                self.held[conn][event.channel] = event  # the latest of the frame replaces the one held
            else:
                self._post(conn, event)

    def _post(self, conn: int, event: EventMsg) -> None:
        outbox = self.outboxes[conn]
        # the mailbox: an unsent event of the same channel is replaced, the newer one goes to the back
        for index, queued in enumerate(outbox):
            if isinstance(queued, EventMsg) and queued.channel == event.channel:
                del outbox[index]
                break
        outbox.append(event)


# --------------------------------------------------------------------------- clients


class SimClient(Protocol):
    index: int

    @property
    def nonce(self) -> str: ...

    def edit(self, leaves: dict[str, Any]) -> Tune: ...

    def connected(self, first: bool) -> list[ToServer]: ...

    def receive(self, message: ToClient) -> list[ToServer]: ...

    @property
    def ready(self) -> bool: ...

    def shown_params(self) -> Any: ...

    def shown_view(self) -> Any: ...


class MaskingClient:
    """The client of PROTOCOL.md section 5, through ClientCausalState (what client/ uses).

    ``make_state`` makes its ``ClientCausalState`` from a nonce (the fixture
    passes one that records every call).
    """

    def __init__(self, index: int, make_state: Callable[[str], ClientCausalState] = ClientCausalState) -> None:
        self.index = index
        self.generation = 0
        self.causal = make_state(self._nonce_of(0))
        self.resyncing = False

    def _nonce_of(self, generation: int) -> str:
        return f"client{self.index}-{generation}"  # deterministic stand-in for uuid4

    @property
    def nonce(self) -> str:
        return self.causal.nonce

    def edit(self, leaves: dict[str, Any]) -> Tune:
        patch = leaves_to_patch(leaves)
        return Tune(self.causal.edit_patch(NODE, patch), patch)

    @property
    def ready(self) -> bool:
        """False from a reconnect until the resync: the client library holds new edits back (its gate)."""
        return not self.resyncing

    def connected(self, first: bool) -> list[ToServer]:
        if first:
            return [GetPipeline()]
        self.generation += 1
        self.causal.reconnected(self._nonce_of(self.generation))
        self.resyncing = True
        return [GetPipeline()]  # rule C4: resync first, re-send after

    def _resend(self) -> list[ToServer]:
        messages: list[ToServer] = []
        for node_id, groups in self.causal.take_resend().items():
            for values in groups:
                if "" in values:
                    document = values[""]
                    messages.append(Tune(self.causal.edit_replace(node_id, document), document, replace=True))
                    values = {ptr: value for ptr, value in values.items() if ptr != ""}
                if values:
                    patch = leaves_to_patch(values)
                    messages.append(Tune(self.causal.edit_patch(node_id, patch), patch))
        return messages

    def receive(self, message: ToClient) -> list[ToServer]:
        if isinstance(message, EventMsg):
            self.causal.on_event(NODE, message.channel, message.data)
        elif isinstance(message, ErrorMsg):
            if message.stamp.sender == self.nonce:
                self.causal.on_refused(NODE, message.stamp.rev)
        else:
            self.causal.on_event(NODE, PARAMS_CHANNEL, message.params, retired_acks=message.retired_acks)
            self.causal.on_event(NODE, VIEW_CHANNEL, message.view)
            if self.resyncing:
                self.resyncing = False
                return self._resend()
        return []

    def shown_params(self) -> Any:
        return self.causal.shown(NODE, PARAMS_CHANNEL)

    def shown_view(self) -> Any:
        return self.causal.shown(NODE, VIEW_CHANNEL)

    def server_params(self) -> Any:
        """The last params state the server sent (rule C2)."""
        return self.causal.mask(NODE, PARAMS_CHANNEL).server_state

    def pending(self) -> dict[str, list[tuple[int, Any]]]:
        """The pending entries of the current nonce, per pointer, oldest first."""
        return self.causal.mask(NODE, PARAMS_CHANNEL).pending

    def retired(self) -> list[tuple[str, dict[str, list[tuple[int, Any]]]]]:
        """Pending entries of earlier nonces, waiting for the resync (rule C4)."""
        return self.causal.mask(NODE, PARAMS_CHANNEL).retired

    def masked(self) -> dict[str, Any]:
        """The value laid over the server's state at each pointer: the newest entry, retired ones first."""
        values: dict[str, Any] = {}
        for _sender, entries in self.retired():
            values.update({ptr: kept[-1][1] for ptr, kept in entries.items()})
        values.update({ptr: kept[-1][1] for ptr, kept in self.pending().items()})
        return values


class SeedGateClient:
    """The reference PR's client: apply locally, drop an event when _sender is mine and _rev <= my counter."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.generation = 0
        self._nonce = f"seed{index}-0"
        self.counter = 0
        self.params: Any = {}
        self.view: Any = {}

    @property
    def nonce(self) -> str:
        return self._nonce

    def edit(self, leaves: dict[str, Any]) -> Tune:
        patch = leaves_to_patch(leaves)
        self.counter += 1
        self.params = merge_patch(self.params, patch)
        if "width" in patch:  # the seed's UI computes the layout of its own edit locally
            self.view = {**self.view, "canvas_width": patch["width"]}
        return Tune(Stamp(self._nonce, self.counter), patch)

    def connected(self, first: bool) -> list[ToServer]:
        if not first:
            self.generation += 1
            self._nonce = f"seed{self.index}-{self.generation}"
            self.counter = 0
        return [GetPipeline()]

    @property
    def ready(self) -> bool:
        return True

    def _gated(self, data: dict[str, Any]) -> bool:
        return data.get("_sender") == self._nonce and data.get("_rev", 0) <= self.counter

    def receive(self, message: ToClient) -> list[ToServer]:
        if isinstance(message, EventMsg):
            if self._gated(message.data):
                return []
            if message.channel == PARAMS_CHANNEL:
                self.params = strip_private(message.data)
            else:
                self.view = strip_private(message.data)
        elif isinstance(message, PipelineMsg):
            self.params = strip_private(message.params)
            self.view = strip_private(message.view)
        return []

    def shown_params(self) -> Any:
        return self.params

    def shown_view(self) -> Any:
        return self.view


# --------------------------------------------------------------------------- the world


@dataclass(frozen=True)
class Step:
    kind: str  # edit | to_server | to_client | frame_end | reconnect | add_input
    client: int = 0
    pointers: tuple[str, ...] = ()
    value_kind: str = "plain"  # plain | clamp | refuse


# Deliveries are weighted up so that histories make progress.
STEP_KINDS = ("edit",) * 3 + ("to_server",) * 3 + ("to_client",) * 3 + ("frame_end",) * 2 + ("reconnect", "add_input")
# A third of the edits are refused: enough that a refusal is often in flight over a pending valid edit
# of the same pointer (the situation of PROTOCOL.md section 5's "why every entry").
EDIT_VALUE_KINDS = ("plain",) * 3 + ("clamp",) + ("refuse",) * 2


def random_steps(rng: random.Random, *, clients: int, count: int) -> list[Step]:
    """A schedule drawn like the property tests draw theirs, from a seeded ``random.Random``."""
    return [
        Step(
            kind=rng.choice(STEP_KINDS),
            client=rng.randrange(clients),
            pointers=tuple(rng.sample(POINTERS, rng.choice((1, 1, 2)))),
            value_kind=rng.choice(EDIT_VALUE_KINDS),
        )
        for _ in range(count)
    ]


@dataclass
class World:
    """Server, clients, and the FIFO queues between them.

    ``check`` asserts properties 1-4 of tests/test_causal_properties.py as the
    history runs (a failing step fails at once). Whatever ``check`` says, each
    own-value regression of a masking client is recorded in ``regressions``.
    """

    make_client: Callable[[int], SimClient]
    clients_count: int
    sticky_view_stamp: bool = False
    check: bool = True
    paced: bool = False
    server: SimServer = field(init=False)
    clients: list[SimClient] = field(init=False)
    to_server: list[deque[ToServer]] = field(init=False)
    conns: list[int] = field(init=False)
    own_writes: list[dict[str, list[Any]]] = field(init=False)
    value_kinds: dict[Any, str] = field(init=False)  # values are unique: what each edit wrote was
    regressions: list[str] = field(init=False)
    refusals_over_pending: int = field(init=False)  # refusals that found an older entry of their pointer pending

    def __post_init__(self) -> None:
        self.server = SimServer(sticky_view_stamp=self.sticky_view_stamp, paced=self.paced)
        self.clients = [self.make_client(i) for i in range(self.clients_count)]
        self._conn_ids = itertools.count()
        self._values = itertools.count(1)
        self.to_server = [deque() for _ in self.clients]
        self.conns = [-1] * self.clients_count
        self.own_writes = [{} for _ in self.clients]
        self.value_kinds = {}
        self.regressions = []
        self.refusals_over_pending = 0
        # per client and pointer, the position in own_writes of the newest accepted own value it has shown
        self._newest_accepted_shown: list[dict[str, int]] = [{} for _ in self.clients]
        for index in range(self.clients_count):
            self._connect(index, first=True)

    def _connect(self, index: int, *, first: bool) -> None:
        conn = next(self._conn_ids)
        self.conns[index] = conn
        self.server.open(conn)
        self.to_server[index] = deque(self.clients[index].connected(first))

    # -- actions

    def edit(self, index: int, pointers: Iterable[str], value_kind: str = "plain") -> None:
        if not self.clients[index].ready:
            return  # the library's gate holds edits back during a resync; the user edits later
        leaves: dict[str, Any] = {}
        for ptr in pointers:
            unique = (index + 1) * 10**6 + next(self._values)
            value = {"plain": unique, "clamp": LIMIT + unique, "refuse": -unique}[value_kind]
            leaves[ptr] = value
            self.own_writes[index].setdefault(ptr, []).append(value)
            self.value_kinds[value] = value_kind
        self.to_server[index].append(self.clients[index].edit(leaves))
        self._observe(index)

    def deliver_to_server(self, index: int) -> bool:
        if not self.to_server[index]:
            return False
        self.server.receive(self.conns[index], self.to_server[index].popleft())
        return True

    def deliver_to_client(self, index: int) -> bool:
        outbox = self.server.outboxes[self.conns[index]]
        if not outbox:
            return False
        message = outbox.pop(0)
        client = self.clients[index]
        if isinstance(message, ErrorMsg) and isinstance(client, MaskingClient) and message.stamp.sender == client.nonce:
            rev = message.stamp.rev
            if any(entries[0][0] < rev and any(r == rev for r, _ in entries) for entries in client.pending().values()):
                self.refusals_over_pending += 1
        self.to_server[index].extend(client.receive(message))
        if self.check and isinstance(client, MaskingClient):
            self._check_after_delivery(client, message)
        self._observe(index)
        return True

    def reconnect(self, index: int) -> None:
        """The connection drops: what was in flight either way is lost; the client reconnects at once."""
        self.server.close(self.conns[index], self.clients[index].nonce)
        self._connect(index, first=False)
        self._observe(index)

    def run(self, steps: Iterable[Step]) -> None:
        for step in steps:
            index = step.client % self.clients_count
            if step.kind == "edit":
                self.edit(index, step.pointers, step.value_kind)
            elif step.kind == "to_server":
                self.deliver_to_server(index)
            elif step.kind == "to_client":
                self.deliver_to_client(index)
            elif step.kind == "frame_end":
                self.server.frame_end()
            elif step.kind == "reconnect":
                self.reconnect(index)
            else:
                self.server.add_input()

    def quiesce(self) -> None:
        """Everyone stops editing; deliver everything in flight."""
        progress = True
        while progress:
            progress = False
            for index in range(self.clients_count):
                while self.deliver_to_server(index):
                    progress = True
            self.server.frame_end()
            for index in range(self.clients_count):
                while self.deliver_to_client(index):
                    progress = True

    def diverged(self) -> list[int]:
        """The clients whose shown state differs from the server's."""
        return [
            client.index
            for client in self.clients
            if client.shown_params() != self.server.params or client.shown_view() != self.server.view()
        ]

    # -- properties

    def _observe(self, index: int) -> None:
        """Property 1, after everything that can change what a client shows.

        A client's shown value at a pointer never returns to an older value
        of its own after it showed a newer one that the server accepts. The
        server applies a client's values in the order sent and each once, so
        only a mask that uncovered a stale server state can show it.
        """
        client = self.clients[index]
        if not isinstance(client, MaskingClient):
            return
        shown = client.shown_params()
        newest_shown = self._newest_accepted_shown[index]
        for ptr, values in self.own_writes[index].items():
            value = pointer.resolve(shown, ptr, MISSING)
            if value is MISSING or value not in values:
                continue
            position = values.index(value)
            newest = newest_shown.get(ptr, -1)
            if position < newest:
                self.regressions.append(
                    f"client {index} went back at {ptr} to its own {value} after showing its newer {values[newest]}"
                )
                assert not self.check, self.regressions[-1]
            elif self.value_kinds[value] != "refuse":
                newest_shown[ptr] = position

    def _check_after_delivery(self, client: MaskingClient, message: ToClient) -> None:
        # property 2 (and 4): where nothing is pending, shown == the server state the client holds
        if isinstance(message, EventMsg) and message.channel == VIEW_CHANNEL:
            assert client.shown_view() == strip_private(message.data)
            return
        shown = client.shown_params()
        masked = client.masked()
        if isinstance(message, ErrorMsg):
            if message.stamp.sender == client.nonce:
                refused = message.stamp.rev
                assert all(rev != refused for entries in client.pending().values() for rev, _ in entries), (
                    f"client {client.index} still masks with its refused rev {refused}"
                )
        else:
            data = message.params if isinstance(message, PipelineMsg) else message.data
            assert client.server_params() == strip_private(data)  # C2
            ack = data["_acks"].get(client.nonce, 0)
            for entries in client.pending().values():
                assert all(rev > ack for rev, _ in entries), "a pending value the server already acknowledged is still masking"
            if isinstance(message, PipelineMsg):  # C4: the resync decides every retired value
                for sender, retired_entries in client.retired():
                    old_ack = max(data["_acks"].get(sender, 0), message.retired_acks.get(sender, 0))
                    assert all(rev > old_ack for kept in retired_entries.values() for rev, _ in kept), (
                        "a processed value survived the resync"
                    )
        state = client.server_params()
        pointers = {p for p, _ in pointer.leaves(state)} | {p for p, _ in pointer.leaves(shown)}
        for ptr in pointers - {""}:
            if ptr in masked:
                assert pointer.resolve(shown, ptr, MISSING) == masked[ptr]
            else:
                assert pointer.resolve(shown, ptr, MISSING) == pointer.resolve(state, ptr, MISSING), (
                    f"client {client.index} hides the server's value at {ptr}"
                )

    def check_quiescent(self) -> None:
        """Property 3: everyone shows the server's state; nothing is pending; no update was lost."""
        assert self.server.lost_updates == [], self.server.lost_updates
        for client in self.clients:
            assert client.shown_params() == self.server.params, f"client {client.index} params differ"
            assert client.shown_view() == self.server.view(), f"client {client.index} view differs"
            if isinstance(client, MaskingClient):
                assert client.pending() == {} and client.retired() == []
                # and no edit was lost on a reconnect: every value the server accepts reached it
                # (a reconnect re-sends every value the server had not processed, in order)
                for ptr, values in self.own_writes[client.index].items():
                    for value in values:
                        if self.value_kinds[value] != "refuse":
                            assert (ptr, value) in self.server.applied, f"client {client.index} lost {ptr}={value}"
