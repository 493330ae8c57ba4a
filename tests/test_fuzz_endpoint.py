"""Hostile input against the real WebSocket endpoint (hypothesis).

One daemon (the test plugin's ``start_daemon``) runs in a background thread
with its own trio run for the whole module; each example is a short trio run
with two clients: the attacker sends one generated frame, the witness checks
that it is still served and that nothing changed. For every frame the
attacker gets only ``error`` answers (or a policy close: 1008/1009), the
daemon keeps running, and the session (``getpipeline``: kinds, params, seq,
connections) and the SQLite contents are the same before and after.

atheris is not used: the parsers under this endpoint are fuzzed by
tests/test_fuzz_parsers.py already, and a coverage-guided fuzzer over a
network round trip per input would add minutes for little.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trio_websocket import ConnectionClosed, open_websocket_url

from compositord.testing.plugin import SMALL_PIPELINE, RunningDaemon, settings_for, start_daemon
from compositord.tests.raw_requests import ask

ACTIONS = [
    "getpipeline",
    "listsessions",
    "createsession",
    "destroysession",
    "addnode",
    "removenode",
    "connect",
    "disconnect",
    "tunenode",
    "tunenodeasync",
    "applybatch",
    "getpreview",
    "subscribepreview",
]
MUTATING_SUCCESS = {"success", "sessioncreated", "sessiondestroyed", "batchapplied"}
SENTINEL = "sentinel-listsessions"


class DaemonThread:
    """The daemon in its own thread and trio run, for sync hypothesis tests that make one trio run per example."""

    def __init__(self, state_dir: Path) -> None:
        self.settings = settings_for(state_dir, SMALL_PIPELINE)
        self.daemon: RunningDaemon | None = None
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="fuzzed-daemon", daemon=True)

    def _main(self) -> None:
        async def run() -> None:
            self._token = trio.lowlevel.current_trio_token()
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                self.daemon = await start_daemon(nursery, self.settings)
                self._ready.set()

        try:
            trio.run(run)
        except BaseException as exc:  # reported by alive()/stop()
            self._failure = exc
        finally:
            self._ready.set()

    def start(self) -> RunningDaemon:
        self._thread.start()
        assert self._ready.wait(60), "the daemon did not start"
        assert self.daemon is not None, f"the daemon failed to start: {self._failure!r}"
        return self.daemon

    def alive(self) -> bool:
        return self._thread.is_alive() and self._failure is None

    def stop(self) -> None:
        if self._token is not None and self._scope is not None and self._thread.is_alive():
            self._token.run_sync_soon(self._scope.cancel)
        self._thread.join(30)
        assert not self._thread.is_alive(), "the daemon did not stop"
        assert self._failure is None, f"the daemon ended with {self._failure!r}"


@pytest.fixture(scope="module")
def fuzzed_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DaemonThread, RunningDaemon]]:
    thread = DaemonThread(tmp_path_factory.mktemp("fuzz") / "state")
    daemon = thread.start()
    yield thread, daemon
    thread.stop()


# ----------------------------------------------------------------------------- what the attacker sends

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(["comp", "bars", "pipeline", "in_0", "in_1", "video::compositor"]),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)

# Stamps of every wrong kind; a valid one goes with an invalid patch, so no example changes state.
bad_senders = st.one_of(
    st.integers(),
    st.none(),
    st.just(""),
    st.text(min_size=129, max_size=140),
    st.lists(st.text(max_size=3), max_size=2),
    st.just({"a": 1}),
)
bad_revs = st.one_of(
    st.integers(max_value=0),
    st.integers(min_value=2**53 + 1),
    st.floats(),
    st.booleans(),
    st.text(max_size=5),
    st.none(),
    st.just(10**400),
)


@st.composite
def stamped_tunes(draw: st.DrawFn) -> str:
    patch: dict[str, Any] = {"layers": {"in_0": {"opacity": draw(st.sampled_from([2.0, -1, "half", None, [0.5]]))}}}
    kind = draw(st.sampled_from(["bad-sender", "bad-rev", "only-one", "valid-stamp-bad-patch"]))
    if kind == "bad-sender":
        patch.update(_sender=draw(bad_senders), _rev=1)
    elif kind == "bad-rev":
        patch.update(_sender="fuzzer", _rev=draw(bad_revs))
    elif kind == "only-one":
        patch.update(draw(st.sampled_from([{"_sender": "fuzzer"}, {"_rev": 3}])))
    else:
        patch.update(_sender="fuzzer", _rev=draw(st.integers(1, 2**53)))
        patch["layers"]["in_0"]["opacity"] = 2.0  # out of range: refused whatever the stamp
    action = draw(st.sampled_from(["tunenode", "tunenodeasync"]))
    message = {draw(st.sampled_from(["PatchParams", "UpdateParams"])): patch}
    payload = {
        "action": action,
        "session_id": "pipeline",
        "node_id": draw(st.sampled_from(["comp", "bars", "nope"])),
        "message": message,
    }
    text = json.dumps({"type": "request", "correlation_id": "x", "payload": payload})
    if draw(st.booleans()) and "10000000000" not in text:
        text = text.replace('"_rev": 1', '"_rev": 1e400')  # a float too big for a double
    return text


@st.composite
def envelopes(draw: st.DrawFn) -> str:
    payload: dict[str, Any] = {"action": draw(st.sampled_from(ACTIONS) | st.text(max_size=12))}
    payload.update(
        draw(
            st.dictionaries(
                st.sampled_from(
                    [
                        "session_id",
                        "node_id",
                        "kind",
                        "params",
                        "message",
                        "pipeline",
                        "operations",
                        "name",
                        "from_node",
                        "to_pin",
                    ]
                ),
                json_values,
                max_size=5,
            )
        )
    )
    document: Any = {"type": draw(st.sampled_from(["request", "response", "event", 7, None])), "payload": payload}
    if draw(st.booleans()):
        document["correlation_id"] = draw(json_scalars)
    if draw(st.integers(0, 9)) == 0:
        document = draw(json_values)  # not even an object
    return json.dumps(document)


def _deep(depth: int, opener: str, closer: str) -> str:
    return opener * depth + closer * depth


nasty_texts = st.one_of(
    st.builds(lambda n: _deep(n, "[", "]"), st.integers(60, 5000)),
    st.builds(lambda n: _deep(n, '{"a":', "}").replace('{"a":}', "{}"), st.integers(60, 2000)),
    st.builds(
        lambda n: '{"type":"request","payload":{"action":"getpipeline","session_id":"' + "s" * n + '"}}',
        st.integers(1000, 70_000),
    ),
    st.sampled_from(
        [
            '{"type":"request","payload":{"action":"getpipeline","session_id":NaN}}',
            '{"type":"request","payload":{"action":"tunenode","session_id":"pipeline","node_id":"comp","message":{"PatchParams":{"fps":Infinity}}}}',
            '{"type":"request","payload":{"action":"tunenode","session_id":"pipeline","node_id":"comp","message":{"PatchParams":{"fps":-Infinity}}}}',
            '{"type":"request","payload":{"action":"listsessions"},"payload":{"action":"listsessions"}}',
            '{"type":"request","payload":{"action":"tunenode","session_id":"pipeline","node_id":"comp","message":{"PatchParams":{"width":'
            + "9" * 400
            + "}}}}",
            '{"type":"request","payload":{"action":"tunenode","session_id":"pipeline","node_id":"comp","message":{"PatchParams":{"width":1e999}}}}',
            '{"type":"request","payload":{"action":"getpipeline","session_id":"\\ud800"}}',
            '{"type":"request","payload":{"action":"getpipeline","session_id":"\\u0000\\u202e\\ufeff"}}',
            '\ufeff{"type":"request","payload":{"action":"listsessions"}}',
            "",
            " ",
            "null",
            "[]",
            "{}",
            "\u0000",
            "{'single': 'quotes'}",
            '{"type":"request"',
            "\u202e\u0301\U0001f600" * 100,
        ]
    ),
)

frames = st.one_of(
    st.text(max_size=200).filter(lambda t: not any(0xD800 <= ord(c) <= 0xDFFF for c in t)),
    st.binary(max_size=300),
    envelopes(),
    stamped_tunes(),
    nasty_texts,
)


# ----------------------------------------------------------------------------- the checks


def _database_rows(database: Path) -> list[tuple[Any, ...]]:
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        tables = [name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return [(table, *row) for table in tables for row in connection.execute(f'SELECT * FROM "{table}" ORDER BY 1, 2')]
    finally:
        connection.close()


def _durable(pipeline: dict[str, Any]) -> Any:
    nodes = {node_id: (node["kind"], node["params"], node["seq"]) for node_id, node in pipeline["nodes"].items()}
    return nodes, sorted(json.dumps(c, sort_keys=True) for c in pipeline["connections"])


async def _attack(daemon: RunningDaemon, frame: str | bytes) -> None:
    session = daemon.session_id
    async with open_websocket_url(daemon.url) as witness:
        before = await ask(witness, "before", {"action": "getpipeline", "session_id": session})
        rows_before = _database_rows(daemon.database)
        answers: list[dict[str, Any]] = []
        close_code: int | None = None
        async with open_websocket_url(daemon.url, max_message_size=1 << 22) as attacker:
            try:
                await attacker.send_message(frame)
                await attacker.send_message(
                    json.dumps({"type": "request", "correlation_id": SENTINEL, "payload": {"action": "listsessions"}})
                )
                with trio.fail_after(10):
                    while True:
                        message = json.loads(await attacker.get_message())
                        if message.get("correlation_id") == SENTINEL:
                            break
                        answers.append(message)
            except ConnectionClosed as closed:
                assert closed.reason is not None, "trio-websocket raises ConnectionClosed with the close frame's reason"
                close_code = closed.reason.code
        assert close_code in (None, 1008, 1009), f"closed with {close_code}"
        # Each answer to the frame is an error (a response, or an event for a binary frame).
        mutated = False
        for message in answers:
            payload = message.get("payload", {})
            if payload.get("action") == "error" or payload.get("event") == "error":
                continue
            if "event" in payload:
                continue  # an event of the session (stats, view data) that happened meanwhile
            # A valid request may be generated by chance: it is answered, and then state may change.
            assert payload.get("action") in MUTATING_SUCCESS | {"pipeline", "sessionslisted", "preview"}, message
            mutated = mutated or payload.get("action") in MUTATING_SUCCESS
        # The witness is still served, and (after the attacker's senders are forgotten, S5) nothing changed.
        after = await ask(witness, "after", {"action": "getpipeline", "session_id": session})
        if not mutated:
            assert _durable(after) == _durable(before)
            assert _database_rows(daemon.database) == rows_before
            with trio.fail_after(5):
                while any(node["acks"] for node in after["nodes"].values()):
                    await trio.sleep(0.01)
                    after = await ask(witness, "acks", {"action": "getpipeline", "session_id": session})


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
@given(frame=frames)
def test_any_frame_gets_an_error_or_a_policy_close_and_changes_nothing(
    fuzzed_daemon: tuple[DaemonThread, RunningDaemon], frame: str | bytes
) -> None:
    thread, daemon = fuzzed_daemon
    trio.run(_attack, daemon, frame)
    assert thread.alive(), "the daemon stopped"


def test_replayed_and_regressing_revs_are_conflicts_and_change_nothing(fuzzed_daemon: tuple[DaemonThread, RunningDaemon]) -> None:
    thread, daemon = fuzzed_daemon

    async def replay() -> None:
        async with open_websocket_url(daemon.url) as ws:

            def tune(rev: int, opacity: float) -> dict[str, Any]:
                body = {"layers": {"in_0": {"opacity": opacity}}, "_sender": "replayer", "_rev": rev}
                return {
                    "action": "tunenode",
                    "session_id": daemon.session_id,
                    "node_id": "comp",
                    "message": {"PatchParams": body},
                }

            assert (await ask(ws, "1", tune(5, 0.5)))["action"] == "success"
            rows = _database_rows(daemon.database)
            for rev in (5, 4, 1):
                refused = await ask(ws, f"r{rev}", tune(rev, 0.25))
                assert refused["action"] == "error" and refused["code"] == "conflict", refused
                assert refused["_rev"] == rev and refused["_sender"] == "replayer"
            pipeline = await ask(ws, "g", {"action": "getpipeline", "session_id": daemon.session_id})
            assert pipeline["nodes"]["comp"]["params"]["layers"]["in_0"]["opacity"] == 0.5
            assert pipeline["nodes"]["comp"]["acks"]["replayer"] == 5
            assert _database_rows(daemon.database) == rows

    trio.run(replay)
    assert thread.alive()


def test_nan_and_infinity_never_reach_the_store(fuzzed_daemon: tuple[DaemonThread, RunningDaemon]) -> None:
    _, daemon = fuzzed_daemon
    for row in _database_rows(daemon.database):
        for value in row:
            if isinstance(value, float):
                assert math.isfinite(value)
            if isinstance(value, str):
                assert "NaN" not in value and "Infinity" not in value
