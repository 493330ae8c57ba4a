"""Fuzz the peer-facing parsers: whatever comes in, only RemoteProtocolError comes out.

Inputs: arbitrary text and bytes, arbitrary JSON documents (NaN and infinities
included), and mutations of valid messages, params, pipelines and frame
headers, which reach much deeper into the parsers than random text does.
Accepted input must also be well-behaved: a parsed message re-serializes to
an equal message, validated params are a fixed point and fill with defaults.
Example counts keep the whole file to a few seconds.
"""

from __future__ import annotations

import contextlib
import copy
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compositord.protocol import envelope as E
from compositord.protocol import params
from compositord.protocol.causal import Stamp
from compositord.protocol.errors import RemoteProtocolError

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(
        ["in_0", "in_1", "#FFFFFF", "video::compositor", "out", "UpdateParams", "PatchParams", "_sender", "_rev", "request"]
    )
)
# Integer keys: JSON text never has them (json.dumps turns them into strings), a YAML pipeline file can.
json_docs = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            st.text(max_size=12) | st.sampled_from(list(params.defaults("video::compositor"))) | st.integers(0, 20),
            children,
            max_size=5,
        )
    ),
    max_leaves=30,
)


def check_message(data: str | bytes) -> None:
    """parse_message then parse_action: a typed error, or a message that survives a round trip."""
    try:
        message = E.parse_message(data)
    except RemoteProtocolError as exc:
        assert exc.to_payload()["code"]
        return
    assert E.parse_message(E.serialize(message)) == message
    if isinstance(message, E.Request):
        try:
            action = E.parse_action(message)
        except RemoteProtocolError:
            E.stamps_of(message)  # the S6 helper must cope with whatever was refused
            return
        assert E.parse_action(action.to_request()) == action


def check_params(kind: str, value: Any) -> None:
    try:
        durable = params.validate(kind, value)
    except RemoteProtocolError as exc:
        assert exc.errors and all(e.path == "" or e.path.startswith("/") for e in exc.errors)
        return
    assert params.validate(kind, durable) == durable
    params.with_defaults(kind, durable)


def check_pipeline(doc: Any) -> None:
    try:
        result = params.validate_pipeline(doc)
    except RemoteProtocolError as exc:
        assert exc.errors
        return
    assert params.validate_pipeline(result) == result


@FUZZ
@given(st.text(max_size=200))
def test_arbitrary_text(text: str) -> None:
    check_message(text)


@FUZZ
@given(st.binary(max_size=200))
def test_arbitrary_bytes(data: bytes) -> None:
    check_message(data)
    with contextlib.suppress(RemoteProtocolError):
        E.parse_frame_header(data)


@FUZZ
@given(json_docs, st.sampled_from(["request", "response", "event", None]), st.sampled_from(list(E.ACTIONS)))
def test_arbitrary_json_in_an_envelope(doc: Any, kind: str | None, action: str) -> None:
    check_message(json.dumps(doc))
    envelope: dict[str, Any] = {"payload": doc if not isinstance(doc, dict) else {"action": action, **doc}}
    if kind is not None:
        envelope["type"] = kind
    check_message(json.dumps(envelope))


@FUZZ
@given(json_docs, st.sampled_from(params.NODE_KINDS))
def test_arbitrary_json_as_params_and_pipelines(doc: Any, kind: str) -> None:
    check_params(kind, doc)
    check_pipeline(doc)
    check_pipeline({"nodes": {"n": {"kind": kind, "params": doc}}})


# --- mutations of valid inputs --------------------------------------------------------------

VALID_COMPOSITOR = {
    "width": 640,
    "height": 360,
    "num_inputs": 3,
    "output_format": "nv12",
    "background": "#102030",
    "layers": {"in_1": {"rect": {"x": 10, "y": 10, "width": 200, "height": 100}, "opacity": 0.5, "crop_shape": "circle"}},
    "text_overlays": [{"id": "t", "text": "hi", "rect": {"x": 5, "y": 5}}],
    "image_overlays": [{"id": "i", "asset_path": "logo.png"}],
}
VALID_PIPELINE = {
    "nodes": {
        "bars": {"kind": "video::colorbars", "params": {"pattern": "ramp"}},
        "comp": {"kind": "video::compositor", "params": VALID_COMPOSITOR},
        "file": {"kind": "sink::file", "params": {"path": "out.webm", "codec": "vp9"}},
    },
    "connections": [
        {"from_node": "bars", "from_pin": "out", "to_node": "comp", "to_pin": "in_0"},
        {"from_node": "comp", "from_pin": "out", "to_node": "file", "to_pin": "in"},
    ],
}
VALID_REQUESTS = [
    E.to_json(action.to_request("c"))
    for action in (
        E.GetPipeline("s"),
        E.CreateSession("demo", VALID_PIPELINE),
        E.AddNode("s", "comp", "video::compositor", VALID_COMPOSITOR),
        E.Connect("s", "a", "out", "b", "in_0"),
        E.TuneNode("s", "comp", E.PATCH, {"layers": {"in_1": {"opacity": 0.4}}}, Stamp("n", 3)),
        E.ApplyBatch(
            "s",
            (
                E.TuneNode("s", "c", E.UPDATE, {"fps": 30}, Stamp("n", 4)),
                E.RemoveNode("s", "x"),
                E.Disconnect("s", "a", "out", "b", "in_0"),
            ),
        ),
    )
]


def _containers(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to an object or array inside ``doc``."""
    found: list[tuple[Any, ...]] = []
    if isinstance(doc, dict):
        found.append(path)
        for key, child in doc.items():
            found += _containers(child, (*path, key))
    elif isinstance(doc, list):
        found.append(path)
        for index, child in enumerate(doc):
            found += _containers(child, (*path, index))
    return found


@st.composite
def mutated(draw: st.DrawFn, valid: Any) -> Any:
    """``valid`` with one to three edits: a value replaced, a key removed, or a key added."""
    doc = copy.deepcopy(valid)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_containers(doc)))
        node = doc
        for step in path:
            node = node[step]
        op = draw(st.sampled_from(["replace", "delete", "add"]))
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if op == "add" or not keys:
            if isinstance(node, dict):
                node[draw(st.text(max_size=8) | st.sampled_from(["_x", "rect", "in_5", "action"]))] = draw(json_docs)
            else:
                node.append(draw(json_docs))
        elif op == "delete":
            del node[draw(st.sampled_from(keys))]
        else:
            node[draw(st.sampled_from(keys))] = draw(json_docs)
    return doc


@FUZZ
@given(st.data())
def test_mutated_requests(data: st.DataObject) -> None:
    valid = data.draw(st.sampled_from(VALID_REQUESTS))
    doc = data.draw(mutated(valid))
    check_message(json.dumps(doc))


@FUZZ
@given(mutated(VALID_COMPOSITOR))
def test_mutated_compositor_params(doc: Any) -> None:
    check_params("video::compositor", doc)


@FUZZ
@given(mutated(VALID_PIPELINE))
def test_mutated_pipelines(doc: Any) -> None:
    check_pipeline(doc)


@FUZZ
@given(
    st.sampled_from([("rgba8", 4, 2), ("nv12", 4, 4), ("i420", 2, 2)]),
    st.lists(st.tuples(st.integers(0, 47), st.integers(0, 255)), max_size=4),
    st.integers(-8, 8),
)
def test_mutated_frame_headers(shape: tuple[str, int, int], edits: list[tuple[int, int]], length_change: int) -> None:
    fmt, width, height = shape
    data = bytearray(E.pack_frame_header("cam", width, height, fmt, 0) + bytes(E.frame_size(fmt, width, height)))
    for offset, value in edits:
        if offset < len(data):
            data[offset] = value
    data = data[: len(data) + length_change] if length_change < 0 else data + bytes(length_change)
    try:
        header = E.parse_frame_header(bytes(data))
    except RemoteProtocolError:
        return
    assert len(data) == E.HEADER_SIZE + header.frame_size
