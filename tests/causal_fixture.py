"""Recorded histories of the client causal rules, replayed by every client implementation.

Each history is what one client went through: the calls into its causal
state (local edits and replaces with the stamps they got, server events with
their ``_acks``, ``pipeline`` resyncs with ``retired_acks``, refusals,
reconnects, the values taken for re-sending) and, after each call, what it
shows for every node, params and view. The Python implementation
(``ClientCausalState``, through ``SessionStates`` for resyncs) makes them; the
panel's JavaScript client (daemon/panel/causal.js) replays them in
tests/js/causal_fixture.test.mjs and must show the same after every step.

Scripted histories name the cases of PROTOCOL.md section 5 (a refusal that
overtakes the paced ack of an earlier rev, replaces, the bound, rule C4,
view prediction); seeded ones are paced, refusal-heavy runs of
tests/causal_world.py, one history per client.

    python -m compositord.tests.causal_fixture --write   # regenerate tests/fixtures/causal_histories.json
    python -m compositord.tests.causal_fixture --check   # exit 1 when the committed file is stale

tests/test_causal_fixture.py fails when the committed file differs from what
this module makes now, so the fixture cannot go stale.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compositord.client.session_state import SessionStates
from compositord.protocol.causal import (
    MAX_PENDING_PER_POINTER,
    PARAMS_CHANNEL,
    VIEW_CHANNEL,
    ClientCausalState,
    Stamp,
    leaves_to_patch,
)
from compositord.tests.causal_world import MaskingClient, World, random_steps

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "causal_histories.json"
FORMAT = 1
SEEDS = range(12)
SEEDED_CLIENTS = 3
SEEDED_STEPS = 80


class RecordingState(ClientCausalState):
    """A ClientCausalState that appends each call, and what it shows after it, to ``steps``."""

    def __init__(self, nonce: str, steps: list[dict[str, Any]]) -> None:
        super().__init__(nonce)
        self.steps = steps
        self._quiet = 0

    @contextmanager
    def one_step(self, step: dict[str, Any]) -> Iterator[None]:
        """Record ``step`` for whatever runs inside, not the calls it makes."""
        self._quiet += 1
        try:
            yield
        finally:
            self._quiet -= 1
        self._record(step)

    def _record(self, step: dict[str, Any]) -> None:
        if self._quiet:
            return
        step["shown"] = {
            node_id: {"params": self.shown(node_id, PARAMS_CHANNEL), "view": self.shown(node_id, VIEW_CHANNEL)}
            for node_id in self.node_ids()
        }
        self.steps.append(json.loads(json.dumps(step)))  # a snapshot, as JSON will carry it

    def edit_patch(self, node_id: str, patch: Mapping[str, Any]) -> Stamp:
        stamp = super().edit_patch(node_id, patch)
        self._record({"op": "edit_patch", "node": node_id, "patch": patch, "stamp": stamp.to_json()})
        return stamp

    def edit_replace(self, node_id: str, params: Mapping[str, Any]) -> Stamp:
        stamp = super().edit_replace(node_id, params)
        self._record({"op": "edit_replace", "node": node_id, "params": params, "stamp": stamp.to_json()})
        return stamp

    def on_event(
        self,
        node_id: str,
        channel: str,
        data: Mapping[str, Any],
        *,
        path: str = "",
        retired_acks: Mapping[str, int] | None = None,
    ) -> Any:
        shown = super().on_event(node_id, channel, data, path=path, retired_acks=retired_acks)
        step: dict[str, Any] = {"op": "event", "node": node_id, "channel": channel, "data": data}
        if retired_acks is not None:
            step["retired_acks"] = retired_acks
        self._record(step)
        return shown

    def on_refused(self, node_id: str, rev: int) -> None:
        super().on_refused(node_id, rev)
        self._record({"op": "refused", "node": node_id, "rev": rev})

    def forget_node(self, node_id: str) -> None:
        super().forget_node(node_id)
        self._record({"op": "forget_node", "node": node_id})

    def reconnected(self, new_nonce_value: str | None = None) -> None:
        super().reconnected(new_nonce_value)
        self._record({"op": "reconnected", "nonce": self.nonce})

    def take_resend(self) -> dict[str, list[dict[str, Any]]]:
        resend = super().take_resend()
        self._record({"op": "take_resend", "resend": resend})
        return resend


class _OneSession(SessionStates):
    """The client library's resync (``apply_pipeline``) into one given state."""

    def __init__(self, state: ClientCausalState) -> None:
        super().__init__(state.nonce)
        self._state = state

    def session(self, session_id: str) -> ClientCausalState:
        return self._state


@dataclass
class Script:
    """One scripted history: a recording state and helpers that read like the protocol."""

    name: str
    nonce: str = "me"
    steps: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.state = RecordingState(self.nonce, self.steps)

    def event(self, data: dict[str, Any], acks: dict[str, int], *, node: str = "comp", channel: str = PARAMS_CHANNEL) -> None:
        self.state.on_event(node, channel, {**data, "_acks": acks})

    def pipeline(self, nodes: dict[str, Any]) -> None:
        with self.state.one_step({"op": "pipeline", "nodes": nodes}):
            _OneSession(self.state).apply_pipeline({"session_id": "s", "nodes": nodes})

    def resend(self) -> None:
        """Re-send what the resync left, as the client library does (one message per group, a replace first)."""
        for node_id, groups in self.state.take_resend().items():
            for values in groups:
                if "" in values:
                    self.state.edit_replace(node_id, values[""])
                patch_values = {ptr: value for ptr, value in values.items() if ptr != ""}
                if patch_values:
                    self.state.edit_patch(node_id, leaves_to_patch(patch_values))

    def history(self) -> dict[str, Any]:
        return {"name": self.name, "nonce": self.nonce, "steps": self.steps}


def _opacity(value: float, pin: str = "in_1") -> dict[str, Any]:
    return {"layers": {pin: {"opacity": value}}}


# --------------------------------------------------------------------------- scripted histories


def refusal_over_a_paced_ack() -> Script:
    """The issue: v1 valid, v2 refused; the error arrives before the paced event that acknowledges v1."""
    s = Script("refusal overtakes the paced ack of an earlier rev of the same pointer")
    s.event(_opacity(0.1), {})
    s.state.edit_patch("comp", _opacity(0.25))
    s.state.edit_patch("comp", _opacity(1.5))
    s.state.on_refused("comp", 2)  # shows 0.25, not the server's 0.1
    s.event(_opacity(0.25), {"me": 2, "other": 4})
    return s


def refusals_in_the_middle_of_a_drag() -> Script:
    s = Script("refusals in the middle of a drag uncover the newest entry left")
    s.event({"width": 100, "height": 50}, {})
    for width in (200, -1, 300, -2, 400):
        s.state.edit_patch("comp", {"width": width, **({"height": 60} if width == 300 else {})})
    s.state.on_refused("comp", 5)
    s.state.on_refused("comp", 2)
    s.event({"width": 200, "height": 50}, {"me": 1})  # the paced event of rev 1
    s.state.on_refused("comp", 4)
    s.event({"width": 300, "height": 60}, {"me": 5})
    return s


def replace_with_pointers_over_it() -> Script:
    s = Script("a whole-document replace with pointers laid over it, refused in turn")
    s.event({"width": 100, "height": 50, "fps": 30}, {})
    s.state.edit_patch("comp", {"width": 120})
    s.state.edit_replace("comp", {"width": 300, "fps": 25, "_ui": "stripped"})
    s.state.edit_patch("comp", {"fps": -1, "layers": {"in_0": {"opacity": 0.5}}})
    s.state.on_refused("comp", 3)
    s.state.on_refused("comp", 2)
    s.event({"width": 120, "height": 50, "fps": 30, "_seq": 4}, {"me": 3})
    return s


def merge_patch_deletes_and_empty_objects() -> Script:
    s = Script("merge-patch deletes and empty objects, escaped pointers")
    s.event({"a": {"b": 1}, "c": 2, "d": 5, "x/y": {"~k": 1}}, {})
    s.state.edit_patch("comp", {"c": None, "a": {}, "d": {}, "x/y": {"~k": 2}})
    s.state.edit_patch("comp", {"a": {"b": None, "e": [1, {"_keep": "lists stay as sent"}]}})
    s.event({"a": {}, "d": {}, "x/y": {"~k": 2}}, {"me": 1})
    s.event({"a": {"e": [1, {}]}, "d": {}, "x/y": {"~k": 2}}, {"me": 2})
    return s


def bound_of_pending_entries() -> Script:
    s = Script(f"at most {MAX_PENDING_PER_POINTER} entries per pointer, the oldest dropped")
    s.event({"width": 0, "height": 0}, {})
    s.state.edit_patch("comp", {"height": 7})
    for rev in range(2, MAX_PENDING_PER_POINTER + 5):
        s.state.edit_patch("comp", {"width": rev})
    for rev in range(MAX_PENDING_PER_POINTER + 4, 3, -1):  # every kept entry refused, newest first
        s.state.on_refused("comp", rev)
    s.event({"width": 3, "height": 7}, {"me": 3})
    return s


def acks_only_never_sender_and_rev() -> Script:
    s = Script("an event stamped with my sender but not acknowledging me changes nothing I mask")
    s.event({"width": 100}, {})
    s.state.edit_patch("comp", {"width": 200})
    s.event({"width": 100, "height": 9, "_sender": "me", "_rev": 1}, {"other": 3})
    s.event({"width": 200, "height": 9, "_seq": 4}, {"me": 1})
    return s


def reconnect_resync_and_resend() -> Script:
    s = Script("C4: retire, resync with retired_acks, re-send every undecided entry, refuse a re-sent one")
    s.pipeline({"comp": {"kind": "video::compositor", "params": {"width": 1, "height": 1}, "acks": {}}})
    s.state.edit_patch("comp", {"width": 10})  # rev 1: applied; its ack is lost with the connection
    s.state.edit_patch("comp", {"height": 20})  # rev 2: lost in flight
    s.state.edit_patch("comp", {"height": 21, "fps": -1})  # rev 3: lost in flight; the server will refuse it
    s.state.reconnected("me-2")
    s.pipeline(
        {
            "comp": {
                "kind": "video::compositor",
                "params": {"width": 99, "height": 1},
                "acks": {"other": 4},
                "retired_acks": {"me": 1, "x": 7},
            }
        }
    )
    s.resend()
    s.state.on_refused("comp", 2)  # the re-sent rev 3 (now rev 2): the re-sent height 20 shows
    s.event({"width": 99, "height": 20}, {"me-2": 2, "other": 4})
    return s


def reconnect_without_retired_acks() -> Script:
    s = Script("C4 against a server without retired acks: everything is re-sent")
    s.event({"width": 1}, {})
    s.state.edit_patch("comp", {"width": 10})
    s.state.edit_replace("comp", {"width": 20, "height": 2})
    s.state.edit_patch("comp", {"height": 3})
    s.state.reconnected("me-2")
    s.pipeline({"comp": {"kind": "video::compositor", "params": {"width": 10}}})
    s.resend()
    s.event({"width": 20, "height": 3}, {"me-2": 3})
    return s


def two_reconnects_before_a_resync() -> Script:
    s = Script("two reconnects before a resync: each nonce decided by its own ack, later ones supersede")
    s.event({}, {})
    s.state.edit_patch("comp", {"a": 1})
    s.state.edit_patch("comp", {"b": 1})
    s.state.reconnected("me-2")
    s.state.edit_patch("comp", {"b": 2})  # a partial re-send before the next drop
    s.state.edit_patch("comp", {"c": 2})
    s.state.reconnected("me-3")
    s.state.on_event("comp", PARAMS_CHANNEL, {"_acks": {}}, retired_acks={"me": 1, "me-2": 1})
    s.resend()
    s.state.edit_replace("comp", {"z": 1})
    s.state.reconnected("me-4")
    s.state.on_event("comp", PARAMS_CHANNEL, {"a": 1, "b": 2, "c": 2, "_acks": {}}, retired_acks={})
    s.resend()
    return s


def view_prediction() -> Script:
    s = Script("view prediction of layer rects where aspect_fit is false, dropped by a refusal, replaced by the layout")
    layout = {"layers": [{"id": "in_0", "x": 0, "y": 0, "width": 640}, {"id": "in_1", "x": 10, "y": 0, "width": 320}]}
    s.event({"layers": {"in_0": {"aspect_fit": True}, "in_1": {"aspect_fit": False}}}, {})
    s.event(layout, {}, channel=VIEW_CHANNEL)
    s.state.edit_patch(
        "comp",
        {
            "layers": {
                "in_0": {"rect": {"x": 99}},
                "in_1": {"rect": {"x": 50, "width": 100, "height": True}},
                "in_7": {"rect": {"x": 1}},
            }
        },
    )
    s.state.edit_patch("comp", {"layers": {"in_0": {"aspect_fit": False, "rect": {"y": 7}}}})
    s.state.edit_patch("comp", {"layers": {"in_1": {"rect": {"x": -100000}}}})
    s.state.on_refused("comp", 3)
    s.event(
        {"layers": [{"id": "in_0", "x": 0, "y": 8, "width": 640}, {"id": "in_1", "x": 50, "y": 0, "width": 100}]},
        {"me": 2},
        channel=VIEW_CHANNEL,
    )
    s.state.reconnected("me-2")
    s.state.edit_patch("comp", {"layers": {"in_1": {"rect": {"x": 60}}}})
    return s


def nodes_come_and_go() -> Script:
    s = Script("per-node revs; a resync forgets the nodes that are gone")
    s.pipeline(
        {
            "comp": {
                "kind": "video::compositor",
                "params": {"width": 64},
                "acks": {},
                "view_data": {"canvas_width": 64, "layers": []},
                "view_acks": {},
            },
            "bars": {"kind": "video::colorbars", "params": {"pattern": "smpte"}, "acks": {}},
        }
    )
    s.state.edit_patch("comp", {"width": 128})
    s.state.edit_patch("bars", {"pattern": "ramp"})
    s.state.edit_patch("comp", {"height": 72})
    s.pipeline(
        {
            "comp": {
                "kind": "video::compositor",
                "params": {"width": 128},
                "acks": {"me": 1},
                "view_data": {"canvas_width": 128, "layers": []},
                "view_acks": {"me": 1},
            }
        }
    )
    s.state.forget_node("comp")
    return s


SCRIPTS: tuple[Callable[[], Script], ...] = (
    refusal_over_a_paced_ack,
    refusals_in_the_middle_of_a_drag,
    replace_with_pointers_over_it,
    merge_patch_deletes_and_empty_objects,
    bound_of_pending_entries,
    acks_only_never_sender_and_rev,
    reconnect_resync_and_resend,
    reconnect_without_retired_acks,
    two_reconnects_before_a_resync,
    view_prediction,
    nodes_come_and_go,
)

# --------------------------------------------------------------------------- the fixture


@dataclass
class Coverage:
    """What the seeded histories exercised: the test asserts they keep covering the cases that matter."""

    refusals_over_pending: int = 0
    reconnects: int = 0
    resent_groups: int = 0
    refused: int = 0


def seeded_histories(coverage: Coverage) -> list[dict[str, Any]]:
    histories = []
    for seed in SEEDS:
        recordings: list[list[dict[str, Any]]] = [[] for _ in range(SEEDED_CLIENTS)]

        def make_client(index: int, recordings: list[list[dict[str, Any]]] = recordings) -> MaskingClient:
            return MaskingClient(index, make_state=lambda nonce: RecordingState(nonce, recordings[index]))

        world = World(make_client, SEEDED_CLIENTS, paced=True)  # every property checked while it records
        world.run(random_steps(random.Random(seed), clients=SEEDED_CLIENTS, count=SEEDED_STEPS))
        world.quiesce()
        world.check_quiescent()
        coverage.refusals_over_pending += world.refusals_over_pending
        for index, steps in enumerate(recordings):
            coverage.reconnects += sum(step["op"] == "reconnected" for step in steps)
            coverage.resent_groups += sum(
                len(groups) for step in steps if step["op"] == "take_resend" for groups in step["resend"].values()
            )
            coverage.refused += sum(step["op"] == "refused" for step in steps)
            histories.append({"name": f"paced world, seed {seed}, client {index}", "nonce": f"client{index}-0", "steps": steps})
    return histories


def generate() -> tuple[dict[str, Any], Coverage]:
    coverage = Coverage()
    histories = [script().history() for script in SCRIPTS] + seeded_histories(coverage)
    fixture = {
        "format": FORMAT,
        "made_by": "python -m compositord.tests.causal_fixture --write",
        "rules": "docs/PROTOCOL.md section 5 (C4: 5.2)",
        "histories": histories,
    }
    return fixture, coverage


def render(fixture: dict[str, Any]) -> str:
    """JSON with one step per line: diffs of the fixture read step by step."""
    head = {key: value for key, value in fixture.items() if key != "histories"}
    lines = ["{" + json.dumps(head)[1:-1] + ', "histories": [']
    for h_index, history in enumerate(fixture["histories"]):
        lines.append(json.dumps({"name": history["name"], "nonce": history["nonce"]})[:-1] + ', "steps": [')
        for s_index, step in enumerate(history["steps"]):
            lines.append(json.dumps(step) + ("," if s_index < len(history["steps"]) - 1 else ""))
        lines.append("]}" + ("," if h_index < len(fixture["histories"]) - 1 else ""))
    lines.append("]}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help=f"write {FIXTURE}")
    action.add_argument("--check", action="store_true", help="exit 1 when the committed fixture is stale")
    args = parser.parse_args(argv)
    fixture, _coverage = generate()
    text = render(fixture)
    if args.write:
        FIXTURE.parent.mkdir(parents=True, exist_ok=True)
        FIXTURE.write_text(text, encoding="utf-8")
        print(f"wrote {FIXTURE} ({len(fixture['histories'])} histories)")
        return 0
    if not FIXTURE.exists() or FIXTURE.read_text(encoding="utf-8") != text:
        print(f"{FIXTURE} is stale: run python -m compositord.tests.causal_fixture --write", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
