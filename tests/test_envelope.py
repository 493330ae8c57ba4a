"""Envelope, typed actions, builders and the pushed-frame header (PROTOCOL.md sections 2-4, 6, 7)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from compositord.protocol import envelope as E
from compositord.protocol import frames
from compositord.protocol.causal import Stamp
from compositord.protocol.errors import ErrorCode, FieldError, LocalProtocolError, RemoteProtocolError


def refused(data: Any, **kwargs: Any) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        E.parse_message(data, **kwargs)
    return info.value


def request_doc(action: str, correlation_id: str | None = "c1", **payload: Any) -> str:
    doc: dict[str, Any] = {"type": "request", "payload": {"action": action, **payload}}
    if correlation_id is not None:
        doc["correlation_id"] = correlation_id
    return json.dumps(doc)


def parse_request(data: str | bytes | bytearray | memoryview) -> E.Request:
    """parse_message of a document the test knows to be a request."""
    message = E.parse_message(data)
    assert isinstance(message, E.Request), message
    return message


def action_of(action: str, **payload: Any) -> Any:
    return E.parse_action(parse_request(request_doc(action, **payload)))


def action_error(action: str, **payload: Any) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        action_of(action, **payload)
    return info.value


TUNE = {"session_id": "s1", "node_id": "comp"}


# --- parse_message: the envelope -----------------------------------------------------------


def test_parse_each_message_type() -> None:
    req = E.parse_message(request_doc("getpipeline", session_id="s1"))
    assert req == E.Request("getpipeline", {"session_id": "s1"}, "c1")
    resp = E.parse_message('{"type":"response","correlation_id":"c1","payload":{"action":"success"}}')
    assert resp == E.Response("success", {}, "c1")
    event = E.parse_message(b'{"type":"event","payload":{"event":"noderemoved","session_id":"s","node_id":"n"}}')
    assert event == E.Event("noderemoved", {"session_id": "s", "node_id": "n"})
    assert parse_request(bytearray(b'{"type":"request","payload":{"action":"listsessions"}}')).correlation_id is None
    assert parse_request(memoryview(b'{"type":"request","correlation_id":null,"payload":{"action":"x"}}')).correlation_id is None


@pytest.mark.parametrize(
    "message",
    [
        E.Request("tunenode", {"session_id": "s", "x": [1, 2.5, None, True, "é"]}, "c"),
        E.Request("listsessions"),
        E.Response("pipeline", {"nodes": {}}, None),
        E.Event("nodestatsupdated", {"stats": {"p50": 1.5}}),
    ],
)
def test_serialize_then_parse_round_trips(message: E.Message) -> None:
    text = E.serialize(message)
    assert " " not in text.replace("é", ""), "compact separators"
    assert E.parse_message(text) == message
    assert E.parse_message(text.encode("utf-8")) == message


def test_serialized_shape_is_the_wire_shape() -> None:
    text = E.serialize(E.Response("error", {"code": "not_found"}, "42"))
    assert text == '{"type":"response","correlation_id":"42","payload":{"action":"error","code":"not_found"}}'
    assert (
        E.serialize(E.Event("sessiondestroyed", {"session_id": "s"}))
        == '{"type":"event","payload":{"event":"sessiondestroyed","session_id":"s"}}'
    )
    assert "é" in E.serialize(E.Event("x", {"name": "é"})), "UTF-8 text, not \\u escapes"


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"\xff{}", "not UTF-8: invalid byte at offset 0"),
        (b'{"a":"\xc3"}', "not UTF-8"),
        ("", "not JSON: Expecting value at line 1 column 1"),
        ("{", "not JSON"),
        ('{"a":1} x', "not JSON: Extra data"),
        ('{"a":NaN}', "NaN is not a JSON value"),
        ('{"a":Infinity}', "Infinity is not a JSON value"),
        ('{"a":-Infinity}', "-Infinity is not a JSON value"),
        ('{"a":1e400}', "out of range"),
        ('{"a":-1e400}', "out of range"),
        ('{"a":' + "9" * 31 + "}", "more than 30 digits"),
        ('{"a":-' + "9" * 31 + "}", "more than 30 digits"),
        ('{"a":' + "9" * 5000 + "}", "more than 30 digits"),
        ('{"a":1,"a":2}', "duplicate key 'a'"),
        ('{"a":{"b":1,"b":1}}', "duplicate key 'b'"),
        ('"\\ud800"', "lone UTF-16 surrogate"),
        ('{"\\udfff":1}', "lone UTF-16 surrogate"),
        ("\ud800", "lone surrogate at character 0"),
        ("[" * 100_000 + "]" * 100_000, "too_large"),
        ("[" * 5000 + "]" * 5000, "nested deeper than 64"),
        ("[" * 65 + "]" * 65, "nested deeper than 64"),
        ('{"a":' * 65 + "1" + "}" * 65, "nested deeper than 64"),
    ],
)
def test_malformed_text_is_a_typed_error(data: Any, fragment: str) -> None:
    err = refused(data)
    assert err.code in (ErrorCode.BAD_JSON, ErrorCode.TOO_LARGE)
    assert fragment in str(err)


def test_a_client_reading_its_server_skips_only_the_checks_that_guard_the_server() -> None:
    """``strict=False`` (the client library's parse of server messages): duplicate keys, long integers and
    1e400 pass as ``json.loads`` reads them; ``NaN``, bad encodings, depth and lone surrogates are still refused."""
    assert E.load_json('{"a":1,"a":2}', strict=False) == {"a": 2}
    assert E.load_json('{"a":' + "9" * 31 + "}", strict=False) == {"a": int("9" * 31)}
    assert E.load_json('{"a":1e400}', strict=False) == {"a": float("inf")}
    cases: list[tuple[str | bytes, str]] = [
        ('{"a":NaN}', "NaN is not a JSON value"),
        (b"\xff{}", "not UTF-8"),
        ("[" * 65 + "]" * 65, "nested deeper than 64"),
        ('"\\ud800"', "lone UTF-16 surrogate"),
        ('{"a":1} x', "Extra data"),
    ]
    for data, fragment in cases:
        with pytest.raises(RemoteProtocolError, match=fragment):
            E.load_json(data, strict=False)
    event = E.parse_message('{"type":"event","payload":{"event":"nodestatsupdated"}}', strict=False)
    assert isinstance(event, E.Event)


def test_depth_limit_is_exact() -> None:
    at_limit = "[" * 64 + "]" * 64
    assert E.load_json(at_limit) is not None
    err = refused("[" * 65 + "]" * 65)
    assert err.path == "/0" * 64


def test_valid_surrogate_pairs_and_many_brackets_inside_strings_are_fine() -> None:
    assert E.load_json('"\\ud83d\\ude00"') == "😀"
    assert E.load_json(json.dumps({"text": "[" * 200})) == {"text": "[" * 200}
    assert E.load_json('"\\\\ud800"') == "\\ud800", "an escaped backslash is not a surrogate escape"


def test_thirty_digit_integers_are_fine() -> None:
    assert E.load_json("9" * 30) == int("9" * 30)
    assert E.load_json("-" + "9" * 30) == -int("9" * 30)


def test_size_limit_counts_utf8_bytes() -> None:
    text = json.dumps({"type": "event", "payload": {"event": "x", "s": "é" * 100}}, ensure_ascii=False)
    size = len(text.encode("utf-8"))
    event = E.parse_message(text, max_bytes=size)
    assert isinstance(event, E.Event) and event.event == "x"
    assert refused(text, max_bytes=size - 1).code is ErrorCode.TOO_LARGE
    assert refused(text.encode("utf-8"), max_bytes=size - 1).code is ErrorCode.TOO_LARGE
    assert refused("x" * 65537).code is ErrorCode.TOO_LARGE, "default limit: 64 KiB"


def test_parse_message_rejects_non_text_as_our_own_bug() -> None:
    with pytest.raises(LocalProtocolError):
        E.parse_message(12)  # type: ignore[arg-type]  # a wrong type on purpose: the check under test


@pytest.mark.parametrize(
    ("doc", "errors"),
    [
        ([], {"": "a message must be a JSON object"}),
        ("x", {"": "a message must be a JSON object"}),
        ({}, {"/type": "required", "/payload": "required"}),
        ({"type": "command", "payload": {}}, {"/type": "must be one of request, response, event", "/payload/action": "required"}),
        ({"type": "request", "payload": [], "extra": 1}, {"/extra": "unknown envelope field", "/payload": "must be an object"}),
        ({"type": "request", "payload": {"action": 5}}, {"/payload/action": "must be a lowercase name (letters a-z)"}),
        ({"type": "request", "payload": {"action": "tune_node"}}, {"/payload/action": "must be a lowercase name (letters a-z)"}),
        ({"type": "request", "payload": {"action": ""}}, {"/payload/action": "must be a lowercase name (letters a-z)"}),
        ({"type": "event", "payload": {"action": "x"}}, {"/payload/event": "required"}),
        (
            {"type": "event", "correlation_id": "c", "payload": {"event": "x"}},
            {"/correlation_id": "an event carries no correlation_id"},
        ),
        (
            {"type": "request", "correlation_id": 7, "payload": {"action": "x"}},
            {"/correlation_id": "must be a string of at most 256 characters"},
        ),
        (
            {"type": "request", "correlation_id": "c" * 257, "payload": {"action": "x"}},
            {"/correlation_id": "must be a string of at most 256 characters"},
        ),
    ],
)
def test_bad_envelopes_report_every_field(doc: Any, errors: dict[str, str]) -> None:
    err = refused(json.dumps(doc))
    assert err.code is ErrorCode.BAD_ENVELOPE
    found = {e.path: e.message for e in err.errors} if err.errors else {err.path: err.message.split(": ", 1)[1]}
    assert found == errors


def test_message_constructors_refuse_our_own_misuse() -> None:
    for make in (
        lambda: E.Request("Tune"),
        lambda: E.Request("x", []),  # type: ignore[arg-type]  # a wrong type on purpose: the check under test
        lambda: E.Request("x", {"action": "y"}),
        lambda: E.Response("x", {}, 5),  # type: ignore[arg-type]  # a wrong type on purpose: the check under test
        lambda: E.Event("x", {"event": "y"}),
        lambda: E.TuneNode("s", "n", "merge", {}),
    ):
        with pytest.raises(LocalProtocolError):
            make()


def test_serialize_refuses_non_json_values_as_our_own_bug() -> None:
    for message in (E.Event("x", {"v": float("nan")}), E.Event("x", {"v": object()}), "not a message"):
        with pytest.raises(LocalProtocolError):
            E.serialize(message)  # type: ignore[arg-type]  # a wrong type on purpose: the check under test


# --- parse_action -------------------------------------------------------------------------------


def test_simple_actions() -> None:
    assert action_of("getpipeline", session_id="s1") == E.GetPipeline("s1")
    assert action_of("listsessions") == E.ListSessions()
    assert action_of("destroysession", session_id="s1") == E.DestroySession("s1")
    assert action_of("removenode", session_id="s1", node_id="n1") == E.RemoveNode("s1", "n1")
    link = {"session_id": "s", "from_node": "a", "from_pin": "out", "to_node": "b", "to_pin": "in_0"}
    assert action_of("connect", **link) == E.Connect("s", "a", "out", "b", "in_0")
    disconnect = action_of("disconnect", **link)
    assert disconnect == E.Disconnect("s", "a", "out", "b", "in_0")
    assert not isinstance(disconnect, E.Connect), "a dispatcher on isinstance must not mistake one for the other"


def test_unknown_action() -> None:
    err = action_error("frobnicate")
    assert err.code is ErrorCode.UNKNOWN_ACTION and err.path == "/payload/action"


def test_missing_unknown_and_mistyped_fields_are_all_reported() -> None:
    err = action_error("connect", session_id=3, from_node="bad id", to_node="b", to_pin="", extra=1)
    assert err.code is ErrorCode.BAD_ENVELOPE
    assert {e.path: e.message for e in err.errors} == {
        "/payload/extra": "unknown field for connect",
        "/payload/session_id": "must be a string",
        "/payload/from_node": "must be a node id: letters, digits, '_', '.', '-'",
        "/payload/from_pin": "required by connect",
        "/payload/to_pin": "must have 1..64 characters",
    }
    assert action_error("listsessions", session_id="s").path == "/payload/session_id"
    assert action_error("tunenode", **TUNE).path == "/payload/message"
    assert action_error("applybatch", session_id="s").errors == (FieldError("/payload/operations", "required by applybatch"),)
    assert action_error("createsession", name="x", pipeline="none").path == "/payload/pipeline"
    assert action_error("getpipeline", session_id="s" * 129).path == "/payload/session_id"


def test_create_session_validates_the_pipeline_with_full_paths() -> None:
    pipeline = {"nodes": {"comp": {"kind": "video::compositor", "params": {"width": 640.0}}}}
    assert action_of("createsession", name="demo", pipeline=pipeline) == E.CreateSession(
        "demo", {"nodes": {"comp": {"kind": "video::compositor", "params": {"width": 640}}}, "connections": []}
    )
    pipeline["nodes"]["comp"]["params"] = {"layers": {"in_1": {"opacity": 2}}}
    err = action_error("createsession", name="demo", pipeline=pipeline)
    assert err.code is ErrorCode.INVALID_PARAMS
    assert err.path == "/payload/pipeline/nodes/comp/params/layers/in_1/opacity"
    assert action_error("createsession", name="", pipeline={}).path == "/payload/name"
    assert action_error("createsession", name="x", pipeline=[]).path == "/payload/pipeline"


def test_add_node_validates_params_against_the_kind() -> None:
    added = action_of("addnode", session_id="s", node_id="bars", kind="video::colorbars", params={"width": 320, "_note": "x"})
    assert added == E.AddNode("s", "bars", "video::colorbars", {"width": 320})
    assert action_of("addnode", session_id="s", node_id="p", kind="video::push") == E.AddNode("s", "p", "video::push", {})
    err = action_error("addnode", session_id="s", node_id="bars", kind="video::colorbars", params={"width": 0, "pattern": "x"})
    assert err.code is ErrorCode.INVALID_PARAMS
    assert [e.path for e in err.errors] == ["/payload/params/width", "/payload/params/pattern"]
    err = action_error("addnode", session_id="s", node_id="x", kind="video::nope")
    assert err.code is ErrorCode.BAD_ENVELOPE and err.path == "/payload/kind" and "unknown node kind" in err.message
    assert action_error("addnode", session_id="s", node_id="x", kind="video::image", params=[]).path == "/payload/params"


def test_add_node_unknown_kind_from_validate_gets_the_params_prefix() -> None:
    # A kind string of the wrong length never reaches validate; a known kind with missing params does.
    err = action_error("addnode", session_id="s", node_id="x", kind="video::image")
    assert err.path == "/payload/params/asset_path"


@pytest.mark.parametrize(("variant", "mode"), [("UpdateParams", E.UPDATE), ("PatchParams", E.PATCH)])
def test_tune_takes_the_stamp_and_strips_private_keys(variant: str, mode: str) -> None:
    body = {"layers": {"in_1": {"opacity": 0.4, "_hint": 1}}, "_sender": "nonce-1", "_rev": 12, "_other": 3}
    tune = action_of("tunenode", message={variant: body}, **TUNE)
    assert tune == E.TuneNode("s1", "comp", mode, {"layers": {"in_1": {"opacity": 0.4}}}, Stamp("nonce-1", 12), True)
    assert body["_sender"] == "nonce-1", "the request is not mutated"
    async_tune = action_of("tunenodeasync", message={variant: {"x": None}}, **TUNE)
    assert async_tune == E.TuneNode("s1", "comp", mode, {"x": None}, None, False)


@pytest.mark.parametrize(
    ("message", "path"),
    [
        ({}, "/payload/message"),
        ({"UpdateParams": {}, "PatchParams": {}}, "/payload/message"),
        ({"ReplaceParams": {}}, "/payload/message"),
        ({"PatchParams": []}, "/payload/message/PatchParams"),
        ({"PatchParams": {"_sender": "a"}}, "/payload/message/PatchParams/_rev"),
        ({"PatchParams": {"_rev": 1}}, "/payload/message/PatchParams/_sender"),
        ({"PatchParams": {"_sender": "a", "_rev": True}}, "/payload/message/PatchParams/_rev"),
        ({"PatchParams": {"_sender": "a", "_rev": 0}}, "/payload/message/PatchParams/_rev"),
        ({"PatchParams": {"_sender": 5, "_rev": 1}}, "/payload/message/PatchParams/_sender"),
        ("x", "/payload/message"),
    ],
)
def test_bad_tune_messages(message: Any, path: str) -> None:
    err = action_error("tunenode", message=message, **TUNE)
    assert err.code is ErrorCode.BAD_ENVELOPE and err.path == path


def test_apply_batch() -> None:
    operations = [
        {"action": "addnode", "node_id": "p", "kind": "video::push", "params": {"width": 64, "height": 64}},
        {"action": "connect", "session_id": "s", "from_node": "p", "from_pin": "out", "to_node": "comp", "to_pin": "in_1"},
        {"action": "tunenode", "node_id": "comp", "message": {"PatchParams": {"num_inputs": 3, "_sender": "n", "_rev": 4}}},
        {"action": "disconnect", "from_node": "p", "from_pin": "out", "to_node": "comp", "to_pin": "in_1"},
        {"action": "removenode", "node_id": "p"},
    ]
    batch = action_of("applybatch", session_id="s", operations=operations)
    assert batch == E.ApplyBatch(
        "s",
        (
            E.AddNode("s", "p", "video::push", {"width": 64, "height": 64}),
            E.Connect("s", "p", "out", "comp", "in_1"),
            E.TuneNode("s", "comp", E.PATCH, {"num_inputs": 3}, Stamp("n", 4), True),
            E.Disconnect("s", "p", "out", "comp", "in_1"),
            E.RemoveNode("s", "p"),
        ),
        True,
    )
    assert action_of("applybatch", session_id="s", operations=[], atomic=True) == E.ApplyBatch("s", ())


def test_applybatch_is_always_atomic() -> None:
    """`atomic: false` was parsed and never read (the daemon applied every batch all or nothing): now it is refused."""
    with pytest.raises(RemoteProtocolError) as refused:
        action_of("applybatch", session_id="s", operations=[], atomic=False)
    assert refused.value.code is ErrorCode.BAD_ENVELOPE
    assert refused.value.path == "/payload/atomic"
    assert "always atomic" in refused.value.message
    with pytest.raises(LocalProtocolError):
        E.ApplyBatch("s", (), False)
    assert E.ApplyBatch("s", ()).to_request().payload["atomic"] is True


@pytest.mark.parametrize(
    ("operations", "extra", "code", "path"),
    [
        ("x", {}, ErrorCode.BAD_ENVELOPE, "/payload/operations"),
        ([5], {}, ErrorCode.BAD_ENVELOPE, "/payload/operations/0"),
        ([{"action": "getpipeline"}], {}, ErrorCode.UNKNOWN_ACTION, "/payload/operations/0/action"),
        ([{"action": "tunenodeasync"}], {}, ErrorCode.UNKNOWN_ACTION, "/payload/operations/0/action"),
        ([{"node_id": "x"}], {}, ErrorCode.UNKNOWN_ACTION, "/payload/operations/0/action"),
        (
            [{"action": "removenode", "node_id": "x", "session_id": "other"}],
            {},
            ErrorCode.BAD_ENVELOPE,
            "/payload/operations/0/session_id",
        ),
        ([{"action": "removenode"}], {}, ErrorCode.BAD_ENVELOPE, "/payload/operations/0/node_id"),
        (
            [
                {"action": "removenode", "node_id": "a"},
                {"action": "tunenode", "node_id": "c", "message": {"PatchParams": {"_rev": 2}}},
            ],
            {},
            ErrorCode.BAD_ENVELOPE,
            "/payload/operations/1/message/PatchParams/_sender",
        ),
        (
            [{"action": "addnode", "node_id": "c", "kind": "video::push", "params": {"width": -1}}],
            {},
            ErrorCode.INVALID_PARAMS,
            "/payload/operations/0/params/width",
        ),
        ([], {"atomic": "yes"}, ErrorCode.BAD_ENVELOPE, "/payload/atomic"),
        (
            [{"action": "removenode", "node_id": "n"}] * (E.MAX_BATCH_OPERATIONS + 1),
            {},
            ErrorCode.TOO_LARGE,
            "/payload/operations",
        ),
    ],
)
def test_bad_batches(operations: Any, extra: dict[str, Any], code: ErrorCode, path: str) -> None:
    err = action_error("applybatch", session_id="s", operations=operations, **extra)
    assert (err.code, err.path) == (code, path)


TYPED_ACTIONS: list[Any] = [
    E.GetPipeline("s"),
    E.ListSessions(),
    E.CreateSession("demo", {"nodes": {"b": {"kind": "video::colorbars", "params": {}}}, "connections": []}),
    E.DestroySession("s"),
    E.AddNode("s", "b", "video::colorbars", {"pattern": "ramp"}),
    E.RemoveNode("s", "b"),
    E.Connect("s", "b", "out", "comp", "in_0"),
    E.Disconnect("s", "b", "out", "comp", "in_0"),
    E.TuneNode("s", "comp", E.UPDATE, {"width": 640}, Stamp("n", 1), True),
    E.TuneNode("s", "comp", E.PATCH, {"layers": {"in_0": None}}, None, False),
    E.ApplyBatch("s", (E.TuneNode("s", "comp", E.PATCH, {"fps": 25}, Stamp("n", 2)), E.RemoveNode("s", "b"))),
    E.GetPreview("s", "thumbs"),
    E.SubscribePreview("s", "thumbs"),
    E.UnsubscribePreview("s", "thumbs"),
    E.SubscribePreview("s", "comp", 640, 15.0),
    E.GetSchema(),
    E.ExportPipeline("s"),
    E.ParsePipeline("nodes: {}\n", "toml"),
    E.ListExamples(),
    E.ListAssets(),
]


@pytest.mark.parametrize(
    ("payload", "path"),
    [
        ({"max_width": "640"}, "/payload/max_width"),
        ({"max_width": 640.5}, "/payload/max_width"),
        ({"max_width": True}, "/payload/max_width"),
        ({"max_width": 8}, "/payload/max_width"),
        ({"max_fps": 0}, "/payload/max_fps"),
        ({"max_fps": None}, "/payload/max_fps"),
    ],
)
def test_bad_preview_options(payload: dict[str, Any], path: str) -> None:
    err = action_error("subscribepreview", session_id="s", node_id="comp", **payload)
    assert (err.code, err.path) == (ErrorCode.BAD_ENVELOPE, path)


def test_pipeline_file_actions_name_their_bad_fields() -> None:
    assert action_error("exportpipeline", session_id="s", format="xml").path == "/payload/format"
    assert action_error("parsepipeline", text="", format="yaml").path == "/payload/text"
    assert action_error("parsepipeline", text=5).path == "/payload/text"
    assert action_error("getschema", extra=1).path == "/payload/extra"
    assert action_error("listassets", extra=1).path == "/payload/extra"
    assert action_error("listexamples", extra=1).path == "/payload/extra"


@pytest.mark.parametrize("action", TYPED_ACTIONS, ids=lambda a: type(a).__name__)
def test_to_request_is_what_parse_action_reads(action: Any) -> None:
    request = action.to_request("corr")
    assert request.correlation_id == "corr"
    wire = E.serialize(request)
    assert E.parse_action(parse_request(wire)) == action


def test_stamps_of_finds_well_formed_stamps_even_when_the_action_is_refused() -> None:
    bad_tune = parse_request(
        request_doc(
            "tunenode", session_id="s", node_id="comp", message={"PatchParams": {"x": 1, "_sender": "n", "_rev": 5}, "Extra": 1}
        )
    )
    with pytest.raises(RemoteProtocolError):
        E.parse_action(bad_tune)
    assert E.stamps_of(bad_tune) == [("comp", Stamp("n", 5))]
    batch = parse_request(
        request_doc(
            "applybatch",
            session_id="s",
            operations=[
                {"action": "tunenode", "node_id": "a", "message": {"PatchParams": {"_sender": "n", "_rev": 1}}},
                {"action": "tunenode", "node_id": "b", "message": {"PatchParams": {"_sender": "n", "_rev": 0}}},
                {"action": "tunenode", "node_id": "c", "message": {"PatchParams": {"x": 1}}},
                {"action": "tunenode", "node_id": 5, "message": {}},
                {"action": "tunenode", "node_id": "d", "message": {"UpdateParams": "x"}},
                {"action": "removenode", "node_id": "e"},
                "junk",
            ],
        )
    )
    assert E.stamps_of(batch) == [("a", Stamp("n", 1))]
    assert E.stamps_of(E.Request("getpipeline", {"session_id": "s"})) == []
    assert E.stamps_of(E.Request("applybatch", {"operations": "x"})) == []


# --- responses and events ---------------------------------------------------------------------


def test_error_response_carries_the_stamp_and_node_per_rule_s6() -> None:
    err = RemoteProtocolError.from_field_errors(
        ErrorCode.INVALID_PARAMS, [FieldError("/layers/in_1/opacity", "must be between 0 and 1")]
    )
    response = E.error_response(err, "c9", Stamp("nonce", 7), node_id="comp")
    assert response.correlation_id == "c9" and response.action == "error"
    assert response.payload == {
        "code": "invalid_params",
        "message": "/layers/in_1/opacity: must be between 0 and 1",
        "path": "/layers/in_1/opacity",
        "errors": [{"path": "/layers/in_1/opacity", "message": "must be between 0 and 1"}],
        "_sender": "nonce",
        "_rev": 7,
        "node_id": "comp",
    }
    parsed = E.parse_message(E.serialize(response))
    assert isinstance(parsed, E.Response)
    reply = E.ErrorReply.from_response(parsed)
    assert reply == E.ErrorReply(
        "invalid_params",
        "/layers/in_1/opacity: must be between 0 and 1",
        "/layers/in_1/opacity",
        (FieldError("/layers/in_1/opacity", "must be between 0 and 1"),),
        Stamp("nonce", 7),
        "comp",
    )


def test_error_response_without_stamp_and_with_a_refused_batch() -> None:
    plain = E.error_response(RemoteProtocolError(ErrorCode.NOT_FOUND, "no session 's'"))
    assert plain == E.Response("error", {"code": "not_found", "message": "no session 's'"}, None)
    reply = E.ErrorReply.from_response(plain)
    assert (reply.code, reply.path, reply.stamp, reply.errors, reply.refused) == ("not_found", None, None, (), ())
    batch = E.error_response(
        RemoteProtocolError(ErrorCode.CONFLICT, "replay", "/payload/operations/1/message/PatchParams/_rev"),
        "c",
        Stamp("n", 3),
        node_id="b",
        refused=[("a", Stamp("n", 2)), ("b", Stamp("n", 3))],
    )
    assert batch.payload["refused"] == [{"node_id": "a", "_sender": "n", "_rev": 2}, {"node_id": "b", "_sender": "n", "_rev": 3}]
    assert E.ErrorReply.from_response(batch).refused == (("a", Stamp("n", 2)), ("b", Stamp("n", 3)))
    # What a client drops: the refused list and the error's own stamp, and nothing where there is neither.
    assert E.ErrorReply.from_response(batch).refused_stamps() == [
        ("a", Stamp("n", 2)),
        ("b", Stamp("n", 3)),
        ("b", Stamp("n", 3)),
    ]
    assert reply.refused_stamps() == []


@pytest.mark.parametrize(
    ("payload", "path"),
    [
        ({"message": "m"}, "/payload/code"),
        ({"code": "x"}, "/payload/message"),
        ({"code": "x", "message": "m", "path": 1}, "/payload/path"),
        ({"code": "x", "message": "m", "node_id": 1}, "/payload/node_id"),
        ({"code": "x", "message": "m", "_rev": 1}, "/payload/_sender"),
        ({"code": "x", "message": "m", "errors": {}}, "/payload/errors"),
        ({"code": "x", "message": "m", "errors": [{"path": "/a"}]}, "/payload/errors/0"),
        ({"code": "x", "message": "m", "refused": 1}, "/payload/refused"),
        ({"code": "x", "message": "m", "refused": [{"_sender": "n", "_rev": 1}]}, "/payload/refused/0"),
        ({"code": "x", "message": "m", "refused": [{"node_id": "a"}]}, "/payload/refused/0"),
    ],
)
def test_error_reply_refuses_malformed_error_payloads(payload: dict[str, Any], path: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        E.ErrorReply.from_response(E.Response("error", payload))
    assert info.value.path == path


def test_error_reply_of_a_non_error_is_our_own_bug() -> None:
    with pytest.raises(LocalProtocolError):
        E.ErrorReply.from_response(E.success("c"))


def test_named_responses() -> None:
    assert E.success("c") == E.Response("success", {}, "c")
    pipeline = E.pipeline_response(
        "c",
        session_id="s",
        nodes={"comp": {"kind": "video::compositor", "params": {}, "view_data": None}},
        connections=[{"from_node": "a", "from_pin": "out", "to_node": "comp", "to_pin": "in_0"}],
    )
    assert pipeline.action == "pipeline" and pipeline.payload["protocol_version"] == E.PROTOCOL_VERSION == 1
    assert pipeline.payload["nodes"]["comp"]["kind"] == "video::compositor"
    assert E.sessions_listed(None, [{"session_id": "s", "name": "n"}]).payload == {"sessions": [{"session_id": "s", "name": "n"}]}
    assert E.session_created_response("c", "s", "demo") == E.Response("sessioncreated", {"session_id": "s", "name": "demo"}, "c")
    assert E.session_destroyed_response("c", "s") == E.Response("sessiondestroyed", {"session_id": "s"}, "c")
    assert E.batch_applied("c", "s", 3) == E.Response(
        "batchapplied", {"session_id": "s", "applied": 3, "success": True, "errors": []}, "c"
    )
    for response in (pipeline, E.sessions_listed(None, [])):
        assert E.parse_message(E.serialize(response)) == response


def test_node_params_changed_carries_stamp_acks_and_seq() -> None:
    event = E.node_params_changed("s", "comp", {"width": 640}, Stamp("a", 3), {"a": 3, "b": 9}, 17)
    assert E.serialize(event) == (
        '{"type":"event","payload":{"event":"nodeparamschanged","session_id":"s","node_id":"comp",'
        '"params":{"width":640,"_sender":"a","_rev":3,"_acks":{"a":3,"b":9},"_seq":17}}}'
    )
    server_caused = E.node_params_changed("s", "comp", {}, None, {}, 18)
    assert server_caused.payload["params"] == {"_acks": {}, "_seq": 18}, "no stale stamp on a server-caused change"
    with pytest.raises(LocalProtocolError):
        E.node_params_changed("s", "comp", {"_sender": "x"}, None, {}, 1)


def test_view_data_event() -> None:
    layout = {"canvas_width": 1280, "canvas_height": 720, "layers": [], "text_overlays": [], "image_overlays": []}
    event = E.node_view_data_updated("s", "comp", layout, Stamp("a", 2), {"a": 2}, 5, 12.5)
    assert event.event == "nodeviewdataupdated"
    assert event.payload == {
        "session_id": "s",
        "node_id": "comp",
        "data": {**layout, "_sender": "a", "_rev": 2, "_acks": {"a": 2}, "_seq": 5},
        "timestamp": 12.5,
    }
    assert "_sender" not in E.node_view_data_updated("s", "comp", layout, None, {}, 6, 13.0).payload["data"]


def test_structure_events() -> None:
    link = ("s", "a", "out", "comp", "in_0")
    expected_link = {"session_id": "s", "from_node": "a", "from_pin": "out", "to_node": "comp", "to_pin": "in_0"}
    assert E.connection_added(*link) == E.Event("connectionadded", expected_link)
    assert E.connection_removed(*link) == E.Event("connectionremoved", expected_link)
    assert E.node_added("s", "n", "video::push", {"width": 2}) == E.Event(
        "nodeadded", {"session_id": "s", "node_id": "n", "kind": "video::push", "params": {"width": 2}}
    )
    assert E.node_removed("s", "n") == E.Event("noderemoved", {"session_id": "s", "node_id": "n"})
    assert E.session_created_event("s", "demo") == E.Event("sessioncreated", {"session_id": "s", "name": "demo"})
    assert E.session_destroyed_event("s") == E.Event("sessiondestroyed", {"session_id": "s"})
    stats = {"frames_rendered": 10, "dropped": 0, "late": 1, "render_ms": {"p50": 1.0, "p99": 4.0}}
    assert E.node_stats_updated("s", "comp", stats).payload == {"session_id": "s", "node_id": "comp", "stats": stats}
    err_event = E.error_event(RemoteProtocolError(ErrorCode.BAD_ENVELOPE, "frame header /magic: bad", "/magic"))
    assert err_event == E.Event("error", {"code": "bad_envelope", "message": "frame header /magic: bad", "path": "/magic"})


def test_version_constants() -> None:
    assert E.PROTOCOL_VERSION == 1 and E.PROTOCOL_HEADER == "X-Compositord-Protocol"
    assert E.CONTROL_PATH == "/api/v1/control"


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ('{"type": "request", "correlation_id": "c7", "payload": {"action": "nope"}}', "c7"),
        (b'{"correlation_id": "from-bytes", "payload": NaN}', "from-bytes"),  # refused by the envelope, id still found
        ('{"correlation_id": "' + "x" * E.MAX_CORRELATION_ID + '"}', "x" * E.MAX_CORRELATION_ID),
        ('{"correlation_id": "' + "x" * (E.MAX_CORRELATION_ID + 1) + '"}', None),  # a response could not carry it
        ('{"correlation_id": "\\ud800"}', None),  # parses, but has no UTF-8 form to send back
        ('{"correlation_id": 7}', None),
        ('["correlation_id", "c"]', None),
        ('{"correlation_id": "c"', None),
        (b"\xff\xfe", None),
        ("[" * 100_000 + "]" * 100_000, None),
    ],
    ids=[
        "request",
        "bytes",
        "longest",
        "too-long",
        "lone-surrogate",
        "not-a-string",
        "not-an-object",
        "not-json",
        "not-utf8",
        "deep",
    ],
)
def test_correlation_id_of_a_refused_message(message: str | bytes, expected: str | None) -> None:
    assert E.correlation_id_of(message) == expected


# --- pushed-frame header (section 6) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "width", "height", "size"), [("rgba8", 3, 5, 60), ("nv12", 4, 2, 12), ("i420", 1920, 1080, 1920 * 1080 * 3 // 2)]
)
def test_frame_header_round_trip(fmt: str, width: int, height: int, size: int) -> None:
    header = E.pack_frame_header("cam", width, height, fmt, -40)
    assert len(header) == E.HEADER_SIZE == 32 and header[:4] == b"CFRM"
    parsed = E.parse_frame_header(header + bytes(size))
    assert parsed == E.FrameHeader(E.node_id_hash("cam"), width, height, fmt, -40, 1)
    assert parsed.frame_size == size
    assert E.node_id_hash("cam") != E.node_id_hash("cam2")


def _header_with(**fields: Any) -> bytes:
    values = {"magic": b"CFRM", "version": 1, "fmt": 0, "reserved": 0, "hash": 1, "width": 2, "height": 2, "pts": 0}
    values.update(fields)
    return frames.HEADER.pack(*values.values())


@pytest.mark.parametrize(
    ("data", "path", "fragment"),
    [
        (b"", "", "shorter than the 32-byte header"),
        (b"CFRM" + bytes(27), "", "shorter than the 32-byte header"),
        (_header_with(magic=b"CFRX") + bytes(16), "/magic", "must be b'CFRM'"),
        (_header_with(version=2) + bytes(16), "/version", "unsupported version 2"),
        (_header_with(fmt=3) + bytes(16), "/pixel_format", "unknown code 3"),
        (_header_with(reserved=1) + bytes(16), "/reserved", "must be 0"),
        (_header_with(width=0), "/width", "must be between 1 and 7680"),
        (_header_with(height=7681), "/height", "must be between 1 and 7680"),
        (_header_with(fmt=1, width=3) + bytes(9), "/width", "must be even for nv12"),
        (_header_with(fmt=2, height=3) + bytes(9), "/height", "must be even for i420"),
        (_header_with() + bytes(15), "", "2x2 rgba8 needs 16 frame bytes, the message has 15"),
        (_header_with() + bytes(17), "", "needs 16 frame bytes, the message has 17"),
        (_header_with(fmt=1) + bytes(16), "", "2x2 nv12 needs 6 frame bytes"),
    ],
)
def test_bad_frame_headers(data: bytes, path: str, fragment: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        E.parse_frame_header(data)
    assert info.value.code is ErrorCode.BAD_ENVELOPE
    assert info.value.path == path and fragment in info.value.message


def test_oversize_binary_message() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        E.parse_frame_header(_header_with() + bytes(16), max_bytes=40)
    assert info.value.code is ErrorCode.TOO_LARGE


def test_frame_header_accepts_memoryview() -> None:
    data = memoryview(E.pack_frame_header("n", 2, 2, "rgba8", 7) + bytes(16))
    assert E.parse_frame_header(data).pts_us == 7


@pytest.mark.parametrize(
    ("args"),
    [
        ("n", 2, 2, "bgra", 0),
        ("n", 0, 2, "rgba8", 0),
        ("n", 2, 7681, "rgba8", 0),
        ("n", 3, 2, "nv12", 0),
        ("n", 2, 2, "rgba8", 2**63),
    ],
)
def test_pack_frame_header_refuses_our_own_misuse(args: tuple[Any, ...]) -> None:
    with pytest.raises(LocalProtocolError):
        E.pack_frame_header(*args)


@pytest.mark.parametrize("action", ["getpreview", "subscribepreview", "unsubscribepreview"])
def test_preview_actions_check_their_fields(action: str) -> None:
    err = action_error(action, session_id="s", node_id="bad id!", extra=1)
    assert err.code == ErrorCode.BAD_ENVELOPE
    assert {e.path for e in err.errors} == {"/payload/node_id", "/payload/extra"}
    assert action_error(action, node_id="thumbs").path == "/payload/session_id"


PREVIEW_IMAGE = {
    "jpeg": b"\xff\xd8jpeg\xff\xd9",
    "width": 160,
    "height": 90,
    "frame_number": 42,
    "media_time": 1.4,
    "timestamp": 1700000000.5,
}


def test_preview_response_and_event_carry_the_jpeg_in_base64() -> None:
    import base64

    response = E.preview_response("c9", "s", "thumbs", **PREVIEW_IMAGE)
    assert response.action == "preview" and response.correlation_id == "c9"
    payload = response.payload
    assert (payload["content_type"], payload["width"], payload["height"]) == ("image/jpeg", 160, 90)
    assert base64.b64decode(payload["data"]) == PREVIEW_IMAGE["jpeg"]
    assert (payload["frame_number"], payload["media_time"], payload["timestamp"]) == (42, 1.4, 1700000000.5)
    event = E.node_preview_updated("s", "thumbs", **PREVIEW_IMAGE)
    assert event.event == "nodepreviewupdated"
    assert {k: v for k, v in event.payload.items()} == payload
    assert E.parse_message(E.serialize(event)) == event
    with pytest.raises(LocalProtocolError):
        E.preview_response(None, "s", "thumbs", **{**PREVIEW_IMAGE, "jpeg": b""})


def test_prefixed_error_moves_every_path_under_the_prefix() -> None:
    listed = RemoteProtocolError.from_field_errors(
        ErrorCode.INVALID_PARAMS, [FieldError("/width", "too big"), FieldError("/layers/in_0/opacity", "above 1")]
    )
    moved = E.prefixed_error(listed, "/payload/message/PatchParams")
    assert moved.code == ErrorCode.INVALID_PARAMS
    assert [(e.path, e.message) for e in moved.errors] == [
        ("/payload/message/PatchParams/width", "too big"),
        ("/payload/message/PatchParams/layers/in_0/opacity", "above 1"),
    ]
    single = E.prefixed_error(RemoteProtocolError(ErrorCode.CONFLICT, "/_rev: already processed", "/_rev"), "/payload")
    assert (single.path, single.message) == ("/payload/_rev", "/payload/_rev: already processed")
    pathless = E.prefixed_error(RemoteProtocolError(ErrorCode.BAD_ENVELOPE, "not an object"), "/payload/pipeline")
    assert (pathless.path, pathless.message) == ("/payload/pipeline", "/payload/pipeline: not an object")


@pytest.mark.parametrize(
    ("message", "max_chars", "expected"),
    [
        ('{"type": "request", "correlation_id": "c-1", "payload": 3}', None, "c-1"),
        ('{"type": "request", "correlation_id": "c-1", "payload": {', None, None),  # not JSON
        ('["correlation_id", "c-1"]', None, None),  # not an object
        ('{"correlation_id": 7}', None, None),
        ('{"correlation_id": "' + "x" * (E.MAX_CORRELATION_ID + 1) + '"}', None, None),  # could not be echoed
        ('{"correlation_id": "c-2", "pad": "' + "x" * 100 + '"}', 50, None),  # longer than asked to parse
        ('{"correlation_id": "c-2", "pad": "' + "x" * 100 + '"}', 500, "c-2"),
        ("[" * 100_000 + "]" * 100_000, None, None),  # too deep for json
    ],
)
def test_correlation_id_of_parses_at_most_max_chars(message: str | bytes, max_chars: int | None, expected: str | None) -> None:
    assert E.correlation_id_of(message, max_chars=max_chars) == expected


def test_node_state_carries_a_live_inputs_condition_unless_it_has_an_error() -> None:
    assert E.node_state(None) == "ok"
    assert E.node_state(None, "connecting") == "connecting"
    assert E.node_state(None, "live") == "live"
    assert E.node_state("gone", "live") == {"error": "gone"}
    event = E.node_state_changed("s", "n", None, "live")
    assert event.payload["state"] == "live"
    with pytest.raises(LocalProtocolError, match="condition"):
        E.node_state_changed("s", "n", None, "streaming")
