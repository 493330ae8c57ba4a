"""A causal history checker for PROTOCOL.md section 5.

K clients of the client library (each behind its own TCP proxy, so its
connection can be cut as a network drop does) edit one compositor of a fresh
session at random, with random delays: shared pointers that every client
edits, and one private pointer per client, often the same pointer several
times in a row (a drag). About a third of the values are out of range, so the
daemon refuses them; its events are paced to the frame end while the
refusals leave at once, so a refusal often overtakes the event that
acknowledges an earlier edit of the same pointer. Meanwhile an input is added
(auto-PiP) and removed, one client's connection is cut (the library
reconnects, resyncs and re-sends), and some values are rounded by the server
(a layer's ``rect.x`` sent as ``n + 0.4`` is stored as ``n``). Every client
records, in one global order, each edit it sent and each state it was shown:
after each state event, each refusal, each resync and each of its own edits.

Values are unique per edit, so a shown value names the edit that wrote it.
:func:`check` then verifies the consequences listed in section 5:

- no own-value regression: a client's shown value at a pointer never returns
  to an older value of its own after it showed a newer one that the server
  accepts (the flicker-back of a refusal that uncovers stale server state);
- no stale state: once a client sent an edit of a pointer that the server
  accepts, no value it had seen for that pointer before (which the server
  therefore applied before that edit) is ever shown to it again;
- no lost update: the final value of a shared pointer is not one that some
  client saw before sending a later accepted edit of it (that edit would have
  been lost), and each private pointer ends at its owner's last accepted edit;
- server-caused layouts reach everyone: the added input's layer shows up in
  every client's view data, and is gone from all after the removal;
- convergence: once everyone stops, every client shows exactly the server's
  params and view data (clamped values included).
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import trio
from trio_websocket import WebSocketConnection

from compositord.client.errors import CompositordError, ConnectionLost
from compositord.protocol import pointer
from compositord.protocol.params import MAX_COORDINATE
from compositord.testing.dropping_proxy import DroppingProxy
from compositord.tests.raw_requests import ask

CANVAS = (64, 36)
EXTRA_NODE = "extra"


def pipeline_for(clients: int) -> dict[str, Any]:
    width, height = CANVAS
    inputs = clients + 2  # in_0 shared, in_1..in_K private, in_{K+1} for the input added mid-run
    layers: dict[str, Any] = {"in_0": {"opacity": 1.0, "aspect_fit": False, "rect": {"x": 0, "y": 0, "width": 32, "height": 18}}}
    for k in range(clients):
        layers[f"in_{k + 1}"] = {"opacity": 1.0}
    return {
        "nodes": {
            "bars": {"kind": "video::colorbars", "params": {"width": 32, "height": 18}},
            "comp": {
                "kind": "video::compositor",
                "params": {"width": width, "height": height, "fps": 60, "num_inputs": inputs, "layers": layers},
            },
        },
        "connections": [{"from_node": "bars", "from_pin": "out", "to_node": "comp", "to_pin": "in_0"}],
    }


SHARED = ("/layers/in_0/opacity", "/layers/in_0/rect/x")
REFUSED_SHARE = 0.3  # of the edits, out of range: the daemon refuses them
DRAG_SHARE = 0.5  # of the edits after the first, to the pointer of the edit before
TUNE_PATH_PREFIX = "/payload/message/PatchParams"  # a refused tune's error path is this + the value's pointer


def private_pointer(client: int) -> str:
    return f"/layers/in_{client + 1}/opacity"


def edit_value(ptr: str, unique: int, refused: bool) -> Any:
    """A value that names its edit; out of its field's range when ``refused``."""
    if ptr.endswith("/x"):
        return (MAX_COORDINATE if refused else 0) + unique + 0.4
    return (1 if refused else 0) + unique / 100_000


def identity(ptr: str, value: Any) -> Any:
    """What names the edit behind a value: rect x is rounded by the server, so its whole part."""
    if value is None:
        return None
    return round(value) if ptr.endswith("/x") else value


@dataclass
class Step:
    order: int  # one counter for the whole history: every client runs in the same trio thread
    client: int
    kind: str  # "edit" or "shown"
    pointer: str = ""
    value: Any = None  # edit: the value sent
    refused: bool = False  # edit: out of range, so the server refuses it
    params: Any = None  # shown: params as shown
    view: Any = None  # shown: view data as shown


@dataclass
class History:
    seed: int
    clients: int
    session_id: str = ""
    steps: list[Step] = field(default_factory=list)
    last_edit: dict[tuple[int, str], Any] = field(default_factory=dict)
    final_params: Any = None
    final_view: Any = None
    final_shown: dict[int, tuple[Any, Any]] = field(default_factory=dict)
    layout_failures: list[str] = field(default_factory=list)
    refusals_over_pending: int = 0  # refusals that left an older edit of their pointer pending
    _order: int = 0

    def record(self, client: int, kind: str, **values: Any) -> None:
        self._order += 1
        self.steps.append(Step(self._order, client, kind, **values))


def _get(document: Any, ptr: str) -> Any:
    try:
        return pointer.resolve(document, ptr)
    except (KeyError, IndexError, TypeError, ValueError, LookupError):
        return None


def _layer_ids(view: Any) -> set[str]:
    if not isinstance(view, dict):
        return set()
    return {layer["id"] for layer in view.get("layers", []) if isinstance(layer, dict) and isinstance(layer.get("id"), str)}


def check(history: History) -> list[str]:
    """Every violation of section 5's consequences in ``history`` (empty: it holds)."""
    problems: list[str] = list(history.layout_failures)
    pointers = list(SHARED) + [private_pointer(k) for k in range(history.clients)]
    seen: dict[tuple[int, str], set[Any]] = defaultdict(set)
    forbidden: dict[tuple[int, str], set[Any]] = defaultdict(set)
    # An edit is recorded just before the library stamps and masks it: until the client has shown
    # something newer than what it saw before (its own value, as a rule), an older value is no regression.
    armed: dict[tuple[int, str], bool] = defaultdict(bool)
    # Per client and pointer: its own values in the order sent, and the position of the newest accepted one shown.
    own: dict[tuple[int, str], dict[Any, tuple[int, bool]]] = defaultdict(dict)
    newest_accepted_shown: dict[tuple[int, str], int] = defaultdict(lambda: -1)
    for step in history.steps:
        if step.kind == "edit":
            key = (step.client, step.pointer)
            mine = identity(step.pointer, step.value)
            own[key][mine] = (len(own[key]), step.refused)
            if not step.refused:  # a refused edit changes nothing: what it masked may show again
                forbidden[key] |= seen[key] - {mine}
                armed[key] = False
            seen[key].add(mine)
            continue
        for ptr in pointers:
            key = (step.client, ptr)
            shown = identity(ptr, _get(step.params, ptr))
            if shown in own[key]:
                position, refused = own[key][shown]
                if position < newest_accepted_shown[key]:
                    problems.append(
                        f"client {step.client} step {step.order}: {ptr} went back to its own older value {shown!r} after showing a newer accepted one"
                    )
                elif not refused:
                    newest_accepted_shown[key] = position
            if shown in forbidden[key]:
                if armed[key]:
                    problems.append(
                        f"client {step.client} step {step.order}: {ptr} went back to {shown!r}, a value it saw before its own later edit"
                    )
            else:
                armed[key] = True
            seen[key].add(shown)
    for ptr in SHARED:
        final = identity(ptr, _get(history.final_params, ptr))
        for client in range(history.clients):
            if final in forbidden[(client, ptr)]:
                problems.append(f"lost update: {ptr} ended at {final!r}, which client {client} saw before editing it again")
    for client in range(history.clients):
        ptr = private_pointer(client)
        if (client, ptr) in history.last_edit:
            expected = identity(ptr, history.last_edit[(client, ptr)])
            final = identity(ptr, _get(history.final_params, ptr))
            if final != expected:
                problems.append(
                    f"lost update: private {ptr} of client {client} ended at {final!r}, its last edit was {expected!r}"
                )
    for client in range(history.clients):
        params, view = history.final_shown.get(client, (None, None))
        if params != history.final_params:
            problems.append(
                f"no convergence: client {client} shows params {json.dumps(params)}, the server has {json.dumps(history.final_params)}"
            )
        if view != history.final_view:
            problems.append(
                f"no convergence: client {client} shows view {json.dumps(view)}, the server has {json.dumps(history.final_view)}"
            )
    return problems


# ----------------------------------------------------------------------------- running one history


@dataclass
class Harness:
    """What stays up across histories: the clients (each behind its proxy) and a raw observer connection."""

    clients: list[Any]
    proxies: list[DroppingProxy]
    observer: WebSocketConnection
    current: History | None = None
    _ids: int = 0

    async def ask(self, payload: dict[str, Any]) -> dict[str, Any]:
        self._ids += 1
        correlation_id = f"observer-{self._ids}"
        answer = await ask(self.observer, correlation_id, payload)
        if answer.get("action") == "error":
            raise AssertionError(f"{payload.get('action')} refused: {answer}")
        return answer

    async def record_events(self, index: int) -> None:
        """One task per client for the whole run: each state event of the current session becomes a step."""
        client = self.clients[index]
        async for event in client.events():
            history = self.current
            if history is None or event.session_id != history.session_id or event.node_id not in (None, "comp"):
                continue
            if event.name == "refused" and event.payload.get("path", "").startswith(TUNE_PATH_PREFIX):
                ptr = event.payload["path"][len(TUNE_PATH_PREFIX) :]
                older = [rev for rev, _ in client.pending(history.session_id, "comp").get(ptr, []) if rev < event.payload["rev"]]
                history.refusals_over_pending += bool(older)
            if event.name in ("nodeparamschanged", "nodeviewdataupdated", "resynced", "refused"):
                history.record(
                    index,
                    "shown",
                    params=client.shown(history.session_id, "comp"),
                    view=client.shown(history.session_id, "comp", "view"),
                )


async def run_history(harness: Harness, seed: int, *, edits_per_client: int = 6) -> History:
    rng = random.Random(seed)
    k = len(harness.clients)
    history = History(seed, k)
    created = await harness.ask({"action": "createsession", "name": f"history-{seed}", "pipeline": pipeline_for(k)})
    history.session_id = created["session_id"]
    harness.current = history
    serial = iter(range(1, 1_000_000))
    extra_pin = f"in_{k + 1}"
    try:
        for index, client in enumerate(harness.clients):
            await client.get_pipeline(history.session_id)  # know the session: its events are masked from here on
            history.record(
                index,
                "shown",
                params=client.shown(history.session_id, "comp"),
                view=client.shown(history.session_id, "comp", "view"),
            )

        async def edit(index: int) -> None:
            client = harness.clients[index]
            drop_at = rng.randrange(edits_per_client) if index == seed % k else -1
            ptr = rng.choice([*SHARED, private_pointer(index)])
            for n in range(edits_per_client):
                pause = rng.random() * 0.004
                if n and rng.random() >= DRAG_SHARE:
                    ptr = rng.choice([*SHARED, private_pointer(index)])
                refused = rng.random() < REFUSED_SHARE
                if not refused:
                    # A refused value follows the edit before it at once: the case of PROTOCOL.md section
                    # 5's "why every entry" (a refusal while an older value of its pointer is pending) then
                    # comes up by construction, not by how fast this machine acknowledges that older value.
                    await trio.sleep(pause)
                value = edit_value(ptr, next(serial), refused)
                history.record(index, "edit", pointer=ptr, value=value, refused=refused)
                if not refused:
                    history.last_edit[(index, ptr)] = value
                try:
                    await client.tune(history.session_id, "comp", _patch(ptr, value), sync=rng.random() < 0.5)
                except ConnectionLost:
                    pass  # the value stays pending and is re-sent
                except CompositordError:
                    if not refused:
                        raise
                history.record(
                    index,
                    "shown",
                    params=client.shown(history.session_id, "comp"),
                    view=client.shown(history.session_id, "comp", "view"),
                )
                if n == drop_at:
                    # Values pending now are checked like every other: the library re-sends only what the
                    # server had not processed (retired acks, rule C4), so none is applied twice.
                    harness.proxies[index].drop_all()

        async def add_and_remove_an_input() -> None:
            await trio.sleep(rng.random() * 0.01)
            await harness.ask(
                {
                    "action": "addnode",
                    "session_id": history.session_id,
                    "node_id": EXTRA_NODE,
                    "kind": "video::colorbars",
                    "params": {"width": 16, "height": 16},
                }
            )
            await harness.ask(
                {
                    "action": "connect",
                    "session_id": history.session_id,
                    "from_node": EXTRA_NODE,
                    "from_pin": "out",
                    "to_node": "comp",
                    "to_pin": extra_pin,
                }
            )
            await _wait_for_layouts(
                harness, history, lambda view: extra_pin in _layer_ids(view), f"the auto-PiP layer {extra_pin} of the added input"
            )
            await harness.ask({"action": "removenode", "session_id": history.session_id, "node_id": EXTRA_NODE})
            await _wait_for_layouts(
                harness, history, lambda view: extra_pin not in _layer_ids(view), f"the removal of layer {extra_pin}"
            )

        async with trio.open_nursery() as nursery:
            for index in range(k):
                nursery.start_soon(edit, index)
            nursery.start_soon(add_and_remove_an_input)

        # Quiescence: nothing pending anywhere, then every client must come to show the server's state.
        truth = await _truth(harness, history.session_id)
        with trio.move_on_after(5):
            while not all(_shows(client, history.session_id) == truth for client in harness.clients):
                await trio.sleep(0.005)
                truth = await _truth(harness, history.session_id)
        history.final_params, history.final_view = truth
        for index, client in enumerate(harness.clients):
            history.final_shown[index] = _shows(client, history.session_id)
    finally:
        harness.current = None
        await harness.ask({"action": "destroysession", "session_id": history.session_id})
    return history


def _patch(ptr: str, value: Any) -> dict[str, Any]:
    patch: dict[str, Any] = {}
    cursor = patch
    parts = pointer.split(ptr)
    for part in parts[:-1]:
        cursor = cursor.setdefault(part, {})
    cursor[parts[-1]] = value
    return patch


def _shows(client: Any, session_id: str) -> tuple[Any, Any]:
    return client.shown(session_id, "comp"), client.shown(session_id, "comp", "view")


async def _truth(harness: Harness, session_id: str) -> tuple[Any, Any]:
    pipeline = await harness.ask({"action": "getpipeline", "session_id": session_id})
    comp = pipeline["nodes"]["comp"]
    return comp["params"], comp.get("view_data")


async def _wait_for_layouts(harness: Harness, history: History, holds: Any, what: str) -> None:
    with trio.move_on_after(5):
        while not all(holds(client.shown(history.session_id, "comp", "view")) for client in harness.clients):
            await trio.sleep(0.002)
        return
    missing = [i for i, client in enumerate(harness.clients) if not holds(client.shown(history.session_id, "comp", "view"))]
    history.layout_failures.append(f"{what} never reached clients {missing}")


def describe(history: History, client: int, ptr: str) -> str:
    """One client's steps on one pointer, for a failure message."""
    lines = []
    for step in history.steps:
        if step.client != client:
            continue
        if step.kind == "edit" and step.pointer == ptr:
            lines.append(f"  {step.order}: edit {ptr} = {step.value!r}{' (refused)' if step.refused else ''}")
        elif step.kind == "shown":
            lines.append(f"  {step.order}: shown {_get(step.params, ptr)!r}")
    return "\n".join(lines)
