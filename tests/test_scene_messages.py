"""The messages of scenes: a tune's `_animate` and the `take` action (protocol/envelope.py), no GL."""

from __future__ import annotations

from typing import Any

import pytest

from compositord.protocol import envelope
from compositord.protocol.causal import Stamp
from compositord.protocol.errors import ErrorCode, RemoteProtocolError
from compositord.protocol.scenes import AnimateSpec

# --- _animate ---------------------------------------------------------------------------------


def tune(body: dict[str, Any]) -> envelope.TuneNode:
    request = envelope.Request("tunenode", {"session_id": "s", "node_id": "comp", "message": {"PatchParams": body}})
    action = envelope.parse_action(request)
    assert isinstance(action, envelope.TuneNode)
    return action


def test_animate_travels_in_the_message_and_never_in_the_params() -> None:
    body = {
        "layers": {"in_1": {"opacity": 0.2}},
        "_sender": "me",
        "_rev": 3,
        "_animate": {"duration_ms": 250, "easing": "ease_out"},
    }
    action = tune(body)
    assert action.animate == AnimateSpec(250, "ease_out")
    assert action.params == {"layers": {"in_1": {"opacity": 0.2}}}
    assert tune({"layers": {}}).animate is None
    # What a client sends carries it back in the same place.
    assert action.operation()["message"]["PatchParams"]["_animate"] == {"duration_ms": 250, "easing": "ease_out"}
    assert tune(action.operation()["message"]["PatchParams"]) == action


def test_a_bad_animate_is_refused_with_its_path_and_counts_as_processed() -> None:
    payload = {
        "session_id": "s",
        "node_id": "comp",
        "message": {"PatchParams": {"_sender": "me", "_rev": 4, "_animate": {"duration_ms": -5}}},
    }
    request = envelope.Request("tunenode", payload)
    with pytest.raises(RemoteProtocolError) as info:
        envelope.parse_action(request)
    assert info.value.code is ErrorCode.INVALID_PARAMS
    assert info.value.path == "/payload/message/PatchParams/_animate/duration_ms"
    assert envelope.stamps_of(request) == [("comp", Stamp("me", 4))]


def test_a_transition_for_this_change_travels_in_the_message_and_never_in_the_params() -> None:
    action = tune({"program_scene": "pip", "_sender": "me", "_rev": 5, "_transition": {"kind": "cut"}})
    assert action.transition == {"kind": "cut"} and action.params == {"program_scene": "pip"}
    assert tune({"program_scene": "pip"}).transition is None
    assert action.operation()["message"]["PatchParams"]["_transition"] == {"kind": "cut"}
    assert tune(action.operation()["message"]["PatchParams"]) == action


@pytest.mark.parametrize(
    ("transition", "path"),
    [
        ({"kind": "dissolve"}, "/payload/message/PatchParams/_transition/kind"),
        ({"duration_ms": -1}, "/payload/message/PatchParams/_transition/duration_ms"),
        ({"speed": 2}, "/payload/message/PatchParams/_transition/speed"),
        ("cut", "/payload/message/PatchParams/_transition"),
    ],
)
def test_a_bad_transition_for_this_change_is_refused_with_its_path(transition: Any, path: str) -> None:
    payload = {
        "session_id": "s",
        "node_id": "comp",
        "message": {"PatchParams": {"_sender": "me", "_rev": 6, "_transition": transition}},
    }
    request = envelope.Request("tunenode", payload)
    with pytest.raises(RemoteProtocolError) as info:
        envelope.parse_action(request)
    assert info.value.code is ErrorCode.INVALID_PARAMS and info.value.path == path
    assert envelope.stamps_of(request) == [("comp", Stamp("me", 6))], "refused, its stamp still known (S6)"


# --- take ----------------------------------------------------------------------------------------


def test_take_parses_with_its_stamp_and_transition() -> None:
    payload = {"session_id": "s", "node_id": "comp", "_sender": "me", "_rev": 7, "transition": {"kind": "fade", "_x": 1}}
    action = envelope.parse_action(envelope.Request("take", payload))
    assert action == envelope.Take("s", "comp", Stamp("me", 7), {"kind": "fade"})
    assert envelope.parse_action(action.to_request("c1")) == action
    assert action.to_request().payload == {
        "session_id": "s",
        "node_id": "comp",
        "transition": {"kind": "fade"},
        "_sender": "me",
        "_rev": 7,
    }
    bare = envelope.parse_action(envelope.Request("take", {"session_id": "s", "node_id": "comp"}))
    assert bare == envelope.Take("s", "comp") and "take" in envelope.ACTIONS
    assert bare.to_request().payload == {"session_id": "s", "node_id": "comp"}


@pytest.mark.parametrize(
    ("payload", "path"),
    [
        ({"session_id": "s"}, "/payload/node_id"),
        ({"session_id": "s", "node_id": "comp", "transition": "fade"}, "/payload/transition"),
        ({"session_id": "s", "node_id": "comp", "scene": "a"}, "/payload/scene"),
        ({"session_id": "s", "node_id": "comp", "_sender": "me"}, "/payload/_rev"),
    ],
)
def test_a_bad_take_names_its_field(payload: dict[str, Any], path: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        envelope.parse_action(envelope.Request("take", payload))
    assert info.value.code is ErrorCode.BAD_ENVELOPE and info.value.path == path


def test_a_refused_take_still_names_its_stamp() -> None:
    request = envelope.Request("take", {"session_id": "s", "node_id": "comp", "_sender": "me", "_rev": 2, "bogus": 1})
    assert envelope.stamps_of(request) == [("comp", Stamp("me", 2))]
    assert envelope.stamps_of(envelope.Request("take", {"session_id": "s", "node_id": "comp", "_sender": 5, "_rev": 2})) == []
