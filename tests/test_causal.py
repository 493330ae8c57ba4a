"""protocol/causal.py: stamps, stripping, RFC 7396, the server's acks (S2, S5-S7), client masking (C1-C4)."""

from __future__ import annotations

import copy
import json

import pytest

from compositord.protocol.causal import (
    MAX_PENDING_PER_POINTER,
    PARAMS_CHANNEL,
    VIEW_CHANNEL,
    AckBook,
    ClientCausalState,
    NodeMask,
    Stamp,
    leaves_to_patch,
    merge_patch,
    patch_leaves,
    strip_private,
    take_stamp,
)
from compositord.protocol.errors import ErrorCode, LocalProtocolError, RemoteProtocolError

# --------------------------------------------------------------------------- RFC 7396

# Every example of RFC 7396 Appendix A, verbatim (original, patch, result).
RFC7396_APPENDIX_A = [
    ('{"a":"b"}', '{"a":"c"}', '{"a":"c"}'),
    ('{"a":"b"}', '{"b":"c"}', '{"a":"b","b":"c"}'),
    ('{"a":"b"}', '{"a":null}', "{}"),
    ('{"a":"b","b":"c"}', '{"a":null}', '{"b":"c"}'),
    ('{"a":["b"]}', '{"a":"c"}', '{"a":"c"}'),
    ('{"a":"c"}', '{"a":["b"]}', '{"a":["b"]}'),
    ('{"a":{"b":"c"}}', '{"a":{"b":"d","c":null}}', '{"a":{"b":"d"}}'),
    ('{"a":[{"b":"c"}]}', '{"a":[1]}', '{"a":[1]}'),
    ('["a","b"]', '["c","d"]', '["c","d"]'),
    ('{"a":"b"}', '["c"]', '["c"]'),
    ('{"a":"foo"}', "null", "null"),
    ('{"a":"foo"}', '"bar"', '"bar"'),
    ('{"e":null}', '{"a":1}', '{"e":null,"a":1}'),
    ("[1,2]", '{"a":"b","c":null}', '{"a":"b"}'),
    ("{}", '{"a":{"bb":{"ccc":null}}}', '{"a":{"bb":{}}}'),
]


@pytest.mark.parametrize(("original", "patch", "result"), RFC7396_APPENDIX_A)
def test_merge_patch_rfc7396_appendix_a(original: str, patch: str, result: str) -> None:
    target, patch_doc = json.loads(original), json.loads(patch)
    target_before, patch_before = copy.deepcopy(target), copy.deepcopy(patch_doc)
    assert merge_patch(target, patch_doc) == json.loads(result)
    assert target == target_before
    assert patch_doc == patch_before


def test_merge_patch_rfc7396_section_3_example() -> None:
    target = {
        "title": "Goodbye!",
        "author": {"givenName": "John", "familyName": "Doe"},
        "tags": ["example", "sample"],
        "content": "This will be unchanged",
    }
    patch = {"title": "Hello!", "phoneNumber": "+01-123-456-7890", "author": {"familyName": None}, "tags": ["example"]}
    assert merge_patch(target, patch) == {
        "title": "Hello!",
        "author": {"givenName": "John"},
        "tags": ["example"],
        "content": "This will be unchanged",
        "phoneNumber": "+01-123-456-7890",
    }


def test_merge_patch_is_pure() -> None:
    target = {"layers": {"in_1": {"opacity": 0.2, "rect": {"x": 1}}}}
    patch = {"layers": {"in_1": {"opacity": 0.5, "tags": [1, 2]}}}
    snapshot_target, snapshot_patch = copy.deepcopy(target), copy.deepcopy(patch)
    result = merge_patch(target, patch)
    result["layers"]["in_1"]["tags"].append(3)
    assert target == snapshot_target
    assert patch == snapshot_patch


def test_patch_leaves_round_trip() -> None:
    patch = {"layers": {"in_1": {"opacity": 0.4, "rect": {"x": None}}, "a/b": {}}}
    leaves = patch_leaves(patch)
    assert leaves == {"/layers/in_1/opacity": 0.4, "/layers/in_1/rect/x": None, "/layers/a~1b": {}}
    assert leaves_to_patch(leaves) == patch
    assert patch_leaves({}) == {}
    with pytest.raises(LocalProtocolError):
        leaves_to_patch({"": {}})


# --------------------------------------------------------------------------- stamps


def test_stamp_valid() -> None:
    stamp = Stamp("a" * 128, 2**53)
    assert stamp.to_json() == {"_sender": "a" * 128, "_rev": 2**53}
    with pytest.raises(AttributeError):
        stamp.rev = 3  # type: ignore[misc]  # assigning a frozen field on purpose: the test shows it fails


@pytest.mark.parametrize(
    ("sender", "rev", "path"),
    [
        ("", 1, "/_sender"),
        ("a" * 129, 1, "/_sender"),
        (7, 1, "/_sender"),
        ("s", 0, "/_rev"),
        ("s", -1, "/_rev"),
        ("s", 2**53 + 1, "/_rev"),
        ("s", True, "/_rev"),
        ("s", 1.0, "/_rev"),
        ("s", "1", "/_rev"),
    ],
)
def test_stamp_invalid(sender: object, rev: object, path: str) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        Stamp(sender, rev)  # type: ignore[arg-type]  # a wrong type on purpose: the check under test
    assert caught.value.code is ErrorCode.BAD_ENVELOPE
    assert caught.value.path == path


def test_take_stamp_takes_both_and_strips_every_private_key() -> None:
    message = {
        "layers": {"in_1": {"opacity": 0.4, "_ui": 1}},
        "text_overlays": [{"id": "t", "_cursor": 3}],
        "_sender": "nonce",
        "_rev": 12,
        "_acks": {"x": 1},
    }
    snapshot = copy.deepcopy(message)
    stamp, rest = take_stamp(message, path="/payload/message/PatchParams")
    assert stamp == Stamp("nonce", 12)
    assert rest == {"layers": {"in_1": {"opacity": 0.4}}, "text_overlays": [{"id": "t"}]}
    assert message == snapshot


def test_take_stamp_unstamped() -> None:
    assert take_stamp({"width": 10}) == (None, {"width": 10})


@pytest.mark.parametrize(
    ("message", "path"),
    [
        ({"_sender": "s"}, "/payload/message/PatchParams/_rev"),
        ({"_rev": 3}, "/payload/message/PatchParams/_sender"),
        ({"_sender": "", "_rev": 3}, "/payload/message/PatchParams/_sender"),
        ({"_sender": "s", "_rev": False}, "/payload/message/PatchParams/_rev"),
        ({"_sender": "s", "_rev": 0}, "/payload/message/PatchParams/_rev"),
        ([], "/payload/message/PatchParams"),
    ],
)
def test_take_stamp_errors_name_the_field(message: object, path: str) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        take_stamp(message, path="/payload/message/PatchParams")  # type: ignore[arg-type]  # a wrong type on purpose: the check under test
    assert caught.value.code is ErrorCode.BAD_ENVELOPE
    assert caught.value.path == path
    assert path in caught.value.message


def test_strip_private_any_depth_and_never_mutates() -> None:
    value = {"_a": 1, "b": [{"_c": 2, "d": [{"_e": 3, "f": 4}]}, 5], "g": {"_h": {"i": 1}}, 7: "int key"}
    snapshot = copy.deepcopy(value)
    assert strip_private(value) == {"b": [{"d": [{"f": 4}]}, 5], "g": {}, 7: "int key"}
    assert value == snapshot
    assert strip_private([{"_x": 1}]) == [{}]
    assert strip_private("_scalar") == "_scalar"


# --------------------------------------------------------------------------- server acks


def test_ackbook_replay_is_a_conflict() -> None:
    book = AckBook()
    first = Stamp("a", 1)
    book.check(first)
    book.record(first)
    with pytest.raises(RemoteProtocolError) as caught:
        book.check(Stamp("a", 1), path="/payload/message/PatchParams")
    assert caught.value.code is ErrorCode.CONFLICT
    assert caught.value.path == "/payload/message/PatchParams/_rev"
    book.check(Stamp("a", 5))  # gaps are fine: only order matters
    book.check(Stamp("b", 1))  # senders are independent
    assert book.as_dict() == {"a": 1}


def test_ackbook_record_without_check_is_a_local_bug() -> None:
    book = AckBook()
    book.record(Stamp("a", 3))
    with pytest.raises(LocalProtocolError):
        book.record(Stamp("a", 2))
    assert book.ack_of("a") == 3


def test_ackbook_refused_stamp_still_advances_the_ack_s6() -> None:
    book = AckBook()
    book.record(Stamp("a", 2))
    book.refuse(Stamp("a", 4))
    assert book.ack_of("a") == 4
    book.refuse(Stamp("a", 3))  # refusing a replay must not move the ack back
    assert book.ack_of("a") == 4


def test_ackbook_forget_on_disconnect_s5() -> None:
    book = AckBook()
    book.record(Stamp("a", 2))
    book.record(Stamp("b", 1))
    book.forget("a")
    book.forget("never-seen")
    assert book.as_dict() == {"b": 1}
    assert len(book) == 1
    returned = book.as_dict()
    returned["b"] = 99
    assert book.ack_of("b") == 1


# --------------------------------------------------------------------------- client masking


def test_mask_hides_stale_echo_then_follows_ack() -> None:
    mask = NodeMask(PARAMS_CHANNEL, {"layers": {"in_1": {"opacity": 0.1}}})
    mask.edit({"/layers/in_1/opacity": 0.4}, 1)
    mask.edit({"/layers/in_1/opacity": 0.5}, 2)
    # echo of rev 1: server has 0.4, acks me at 1: rev 2 stays pending
    mask.on_server_state({"layers": {"in_1": {"opacity": 0.4}}, "_acks": {"me": 1}}, {"me": 1}, "me")
    assert mask.shown() == {"layers": {"in_1": {"opacity": 0.5}}}
    assert mask.server_state == {"layers": {"in_1": {"opacity": 0.4}}}
    mask.on_server_state({"layers": {"in_1": {"opacity": 0.5}}}, {"me": 2}, "me")
    assert mask.pending == {}
    assert mask.shown() == {"layers": {"in_1": {"opacity": 0.5}}}


def test_mask_shows_other_clients_values_where_nothing_is_pending() -> None:
    mask = NodeMask()
    mask.edit({"/layers/in_1/opacity": 0.4}, 1)
    mask.on_server_state({"layers": {"in_1": {"opacity": 0.9, "z_index": 3}}}, {"other": 7}, "me")
    assert mask.shown() == {"layers": {"in_1": {"opacity": 0.4, "z_index": 3}}}


def test_mask_refused_rev_falls_back_to_server() -> None:
    mask = NodeMask(PARAMS_CHANNEL, {"width": 100})
    mask.edit({"/width": 200}, 1)
    mask.edit({"/height": 50}, 2)
    mask.on_refused(1)
    assert mask.shown() == {"width": 100, "height": 50}


def test_mask_delete_and_empty_object_follow_merge_patch() -> None:
    mask = NodeMask(PARAMS_CHANNEL, {"a": {"b": 1}, "c": 2, "d": 5})
    mask.edit(patch_leaves({"c": None, "a": {}, "d": {}}), 1)
    assert mask.shown() == merge_patch(mask.server_state, {"c": None, "a": {}, "d": {}}) == {"a": {"b": 1}, "d": {}}


def test_mask_replace_then_patch_lays_over_in_rev_order() -> None:
    mask = NodeMask(PARAMS_CHANNEL, {"width": 100, "height": 50})
    mask.edit({"/height": 60}, 1)
    mask.edit({"": {"width": 300}}, 2)
    mask.edit({"/fps": 25}, 3)
    assert mask.shown() == {"width": 300, "fps": 25}
    mask.retire_pending("old")
    assert mask.pending == {} and mask.shown() == {"width": 300, "fps": 25}  # still masked until the resync
    # the patch of rev 1 goes again too: should the replace be refused, the server keeps its height as before
    assert mask.take_pending_for_resend() == [{"/height": 60}, {"": {"width": 300}}, {"/fps": 25}]
    assert mask.retired == []


def test_mask_resend_keeps_every_entry_in_its_message() -> None:
    mask = NodeMask()
    mask.edit({"/a": 1, "/b": 1}, 1)
    mask.edit({"/a": 2, "/c": -1}, 2)
    mask.edit({"/d": 4}, 5)
    mask.retire_pending("old")
    # /c (perhaps refused by the server) travels with /a = 2 as the first time, not with /b or /d; /a = 1
    # goes too, before it, so that a refusal of the second message still leaves the server at /a = 1
    assert mask.take_pending_for_resend() == [{"/a": 1, "/b": 1}, {"/a": 2, "/c": -1}, {"/d": 4}]
    assert mask.take_pending_for_resend() == []


# --------------------------------------------------------------------------- refusal over pending entries (#18)


def test_refusal_uncovers_the_older_pending_entry_of_the_pointer_not_the_server_state() -> None:
    """An error overtakes the paced event that acknowledges an earlier rev of the same pointer."""
    mask = NodeMask(PARAMS_CHANNEL, {"layers": {"in_1": {"opacity": 0.1}}})
    mask.edit({"/layers/in_1/opacity": 0.4}, 1)  # valid
    mask.edit({"/layers/in_1/opacity": 1.5}, 2)  # out of range: the server refuses it
    assert mask.shown() == {"layers": {"in_1": {"opacity": 1.5}}}
    mask.on_refused(2)  # the error leaves at once; the event acknowledging rev 1 waits for the frame end
    assert mask.shown() == {"layers": {"in_1": {"opacity": 0.4}}}, "fell back past the pending rev 1"
    assert mask.pending == {"/layers/in_1/opacity": [(1, 0.4)]}
    mask.on_server_state({"layers": {"in_1": {"opacity": 0.4}}}, {"me": 2}, "me")
    assert mask.pending == {}
    assert mask.shown() == {"layers": {"in_1": {"opacity": 0.4}}}


def test_refusal_drops_only_its_own_rev_and_shows_the_newest_left() -> None:
    mask = NodeMask(PARAMS_CHANNEL, {"width": 100})
    for rev, width in ((1, 200), (2, 300), (3, 400)):
        mask.edit({"/width": width}, rev)
    mask.on_refused(2)
    assert mask.shown() == {"width": 400}
    assert mask.pending == {"/width": [(1, 200), (3, 400)]}
    mask.on_refused(3)
    assert mask.shown() == {"width": 200}
    mask.on_refused(7)  # not ours any more (or never was): nothing changes
    assert mask.pending == {"/width": [(1, 200)]}
    mask.on_refused(1)
    assert mask.pending == {} and mask.shown() == {"width": 100}


def test_ack_drops_every_entry_up_to_it_and_keeps_the_rest_in_order() -> None:
    mask = NodeMask(PARAMS_CHANNEL, {"width": 1})
    for rev in range(1, 6):
        mask.edit({"/width": rev * 10, **({"/height": rev} if rev % 2 else {})}, rev)
    mask.on_server_state({"width": 30, "height": 3}, {"me": 3, "other": 9}, "me")
    assert mask.pending == {"/width": [(4, 40), (5, 50)], "/height": [(5, 5)]}
    assert mask.shown() == {"width": 50, "height": 5}


def test_refused_replace_uncovers_older_pointers_and_a_refused_patch_uncovers_the_replace() -> None:
    mask = NodeMask(PARAMS_CHANNEL, {"width": 100, "height": 50})
    mask.edit({"/width": 120}, 1)
    mask.edit({"": {"width": 300, "fps": 30}}, 2)
    mask.edit({"/fps": -1}, 3)
    assert mask.shown() == {"width": 300, "fps": -1}
    mask.on_refused(3)
    assert mask.shown() == {"width": 300, "fps": 30}
    mask.on_refused(2)
    assert mask.shown() == {"width": 120, "height": 50}


def test_pending_entries_per_pointer_are_bounded_oldest_dropped_first() -> None:
    mask = NodeMask(PARAMS_CHANNEL, {"width": 0})
    mask.edit({"/height": 7}, 1)
    for rev in range(2, MAX_PENDING_PER_POINTER + 4):
        mask.edit({"/width": rev}, rev)
    kept = mask.pending["/width"]
    assert len(kept) == MAX_PENDING_PER_POINTER
    assert [rev for rev, _value in kept] == list(range(4, MAX_PENDING_PER_POINTER + 4))
    assert mask.pending["/height"] == [(1, 7)]  # the bound is per pointer
    assert mask.shown() == {"width": MAX_PENDING_PER_POINTER + 3, "height": 7}
    # At the bound, refusing every kept entry falls back to the server's value: revs 2 and 3 are gone.
    for rev, _value in list(kept):
        mask.on_refused(rev)
    assert mask.shown() == {"width": 0, "height": 7}


def test_edit_revs_must_grow_per_pointer_and_a_bad_edit_changes_nothing() -> None:
    mask = NodeMask()
    mask.edit({"/a": 1}, 2)
    with pytest.raises(LocalProtocolError, match="not above"):
        mask.edit({"/b": 1, "/a": 2}, 2)
    with pytest.raises(LocalProtocolError, match="not above"):
        mask.edit({"/a": 3}, 1)
    assert mask.pending == {"/a": [(2, 1)]}
    mask.edit({"/b": 5}, 1)  # another pointer: only each pointer's own order matters
    assert mask.pending == {"/a": [(2, 1)], "/b": [(1, 5)]}


def test_retired_entries_follow_the_same_rule_and_are_all_resent() -> None:
    state = ClientCausalState("old")
    state.on_event("comp", PARAMS_CHANNEL, {"width": 1, "_acks": {}})
    state.edit_patch("comp", {"width": 10})  # rev 1
    state.edit_patch("comp", {"width": 20})  # rev 2
    state.edit_patch("comp", {"width": 30})  # rev 3
    state.reconnected("new")
    assert state.shown("comp") == {"width": 30}
    state.on_event("comp", PARAMS_CHANNEL, {"width": 10, "_acks": {}}, retired_acks={"old": 1})
    assert state.mask("comp").retired == [("old", {"/width": [(2, 20), (3, 30)]})]
    assert state.shown("comp") == {"width": 30}
    resend = state.take_resend()
    assert resend == {"comp": [{"/width": 20}, {"/width": 30}]}
    stamps = [state.edit_patch("comp", leaves_to_patch(values)) for values in resend["comp"]]
    assert [stamp.rev for stamp in stamps] == [1, 2]
    # the re-sent 30 is refused: the re-sent 20, not yet acknowledged, shows; not the server's 10
    state.on_refused("comp", stamps[1].rev)
    assert state.shown("comp") == {"width": 20}
    assert state.on_event("comp", PARAMS_CHANNEL, {"width": 20, "_acks": {"new": 2}}) == {"width": 20}


def test_mask_view_channel_follows_list_indices_and_deletes() -> None:
    layout = {"layers": [{"id": "in_0", "x": 0}, {"id": "in_1", "x": 5, "extra": 1}]}
    mask = NodeMask(VIEW_CHANNEL, layout)
    mask.edit({"/layers/1/x": 40, "/layers/1/extra": None, "/layers/0/missing": None}, 1)
    assert mask.shown() == {"layers": [{"id": "in_0", "x": 0}, {"id": "in_1", "x": 40}]}
    assert layout["layers"][1] == {"id": "in_1", "x": 5, "extra": 1}
    mask.edit({"": None}, 2)
    assert mask.shown() is None


def test_mask_misuse_is_local() -> None:
    with pytest.raises(LocalProtocolError):
        NodeMask("audio")
    mask = NodeMask()
    with pytest.raises(LocalProtocolError):
        mask.edit({"/a": 1}, 0)
    with pytest.raises(LocalProtocolError):
        mask.edit({"/a": 1}, True)  # an int to the type checker, not to the protocol
    with pytest.raises(LocalProtocolError):
        mask.edit({"no-slash": 1}, 1)


def test_client_state_stamps_per_node_and_reconnect_resets() -> None:
    state = ClientCausalState("nonce-1")
    assert state.stamp_for("comp") == Stamp("nonce-1", 1)
    assert state.stamp_for("comp") == Stamp("nonce-1", 2)
    assert state.stamp_for("bars") == Stamp("nonce-1", 1)
    state.edit_patch("comp", {"width": 640})
    state.edit_replace("bars", {"pattern": "smpte", "_ui": 1})
    assert state.shown("bars") == {"pattern": "smpte"}
    state.reconnected("nonce-2")
    assert state.shown("bars") == {"pattern": "smpte"}  # masked until the resync decides (C4)
    resend = state.take_resend()
    assert resend == {"comp": [{"/width": 640}], "bars": [{"": {"pattern": "smpte"}}]}
    assert state.nonce == "nonce-2"
    assert state.stamp_for("comp") == Stamp("nonce-2", 1)
    with pytest.raises(LocalProtocolError):
        state.reconnected("nonce-2")


def test_client_state_generates_uuid4_nonces() -> None:
    import uuid

    state = ClientCausalState()
    first = state.nonce
    assert uuid.UUID(first).version == 4
    state.reconnected()
    assert state.nonce != first and uuid.UUID(state.nonce).version == 4


def test_client_state_on_event_uses_acks_only() -> None:
    state = ClientCausalState("me")
    state.on_event("comp", PARAMS_CHANNEL, {"width": 100, "_acks": {}})
    stamp = state.edit_patch("comp", {"width": 200})
    # an event stamped with MY sender and rev, from before my edit was processed
    # (ack still 0), carrying someone else's height: keep my width, take the height
    shown = state.on_event(
        "comp", PARAMS_CHANNEL, {"width": 100, "height": 9, "_sender": "me", "_rev": stamp.rev, "_acks": {"other": 3}}
    )
    assert shown == {"width": 200, "height": 9}
    shown = state.on_event("comp", PARAMS_CHANNEL, {"width": 200, "height": 9, "_acks": {"me": 1}, "_seq": 4})
    assert shown == {"width": 200, "height": 9}
    assert state.mask("comp").pending == {}


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ([], "/payload/params"),
        ({"_acks": []}, "/payload/params/_acks"),
        ({"_acks": {"x": "1"}}, "/payload/params/_acks/x"),
        ({"_acks": {"x": True}}, "/payload/params/_acks/x"),
    ],
)
def test_client_state_rejects_malformed_events(data: object, path: str) -> None:
    state = ClientCausalState("me")
    with pytest.raises(RemoteProtocolError) as caught:
        state.on_event("comp", PARAMS_CHANNEL, data, path="/payload/params")  # type: ignore[arg-type]  # a wrong type on purpose: the check under test
    assert caught.value.path == path
    assert not state.has_mask("comp", PARAMS_CHANNEL) or state.mask("comp").server_state == {}


def test_client_state_refused_drops_pending_in_both_channels() -> None:
    state = ClientCausalState("me")
    state.on_event("comp", PARAMS_CHANNEL, {"layers": {"in_0": {"aspect_fit": False}}, "_acks": {}})
    state.on_event("comp", VIEW_CHANNEL, {"layers": [{"id": "in_0", "x": 0, "y": 0}], "_acks": {}})
    stamp = state.edit_patch("comp", {"layers": {"in_0": {"rect": {"x": 30}}}})
    assert state.shown("comp", VIEW_CHANNEL) == {"layers": [{"id": "in_0", "x": 30, "y": 0}]}
    state.on_refused("comp", stamp.rev)
    assert state.shown("comp", VIEW_CHANNEL) == {"layers": [{"id": "in_0", "x": 0, "y": 0}]}
    assert state.shown("comp") == {"layers": {"in_0": {"aspect_fit": False}}}
    state.on_refused("unknown-node", 1)


def test_view_prediction_only_where_the_layout_is_the_rect() -> None:
    state = ClientCausalState("me")
    state.on_event(
        "comp",
        PARAMS_CHANNEL,
        {"layers": {"in_0": {"aspect_fit": True}, "in_1": {"aspect_fit": False}}, "_acks": {}},
    )
    layout = {"layers": [{"id": "in_0", "x": 0, "width": 640}, {"id": "in_1", "x": 10, "width": 320}], "_acks": {}}
    state.on_event("comp", VIEW_CHANNEL, layout)
    state.edit_patch(
        "comp",
        {
            "layers": {
                "in_0": {"rect": {"x": 99}},  # aspect fit: the server decides, no prediction
                "in_1": {"rect": {"x": 50, "width": 100, "rotation": 3, "height": True}, "opacity": 0.5},
                "in_7": {"rect": {"x": 1}},  # not in the layout
            }
        },
    )
    shown = state.shown("comp", VIEW_CHANNEL)
    assert shown["layers"] == [{"id": "in_0", "x": 0, "width": 640}, {"id": "in_1", "x": 50, "width": 100}]
    # turning aspect_fit off in the same patch makes the rect predictable
    state.edit_patch("comp", {"layers": {"in_0": {"aspect_fit": False, "rect": {"y": 7}}}})
    assert state.shown("comp", VIEW_CHANNEL)["layers"][0]["y"] == 7
    # the render loop acks rev 2: its layout wins over the prediction
    state.on_event("comp", VIEW_CHANNEL, {"layers": [{"id": "in_0", "y": 8}], "_acks": {"me": 2}})
    assert state.shown("comp", VIEW_CHANNEL) == {"layers": [{"id": "in_0", "y": 8}]}


def test_view_prediction_needs_a_layout_with_layers() -> None:
    state = ClientCausalState("me")
    state.edit_patch("comp", {"layers": {"in_0": {"aspect_fit": False, "rect": {"x": 1}}}})
    assert not state.has_mask("comp", VIEW_CHANNEL)
    state.on_event("comp", VIEW_CHANNEL, {"canvas_width": 10, "_acks": {}})
    state.edit_patch("comp", {"layers": {"in_0": {"aspect_fit": False, "rect": {"x": 2}}}})
    assert state.mask("comp", VIEW_CHANNEL).pending == {}


def test_forget_node() -> None:
    state = ClientCausalState("me")
    state.edit_patch("comp", {"width": 1})
    state.edit_patch("bars", {"width": 1})
    assert state.node_ids() == ["bars", "comp"]
    state.forget_node("comp")
    assert state.node_ids() == ["bars"]
    assert not state.has_mask("comp")
    assert state.last_rev("comp") == 0


# --------------------------------------------------------------------------- retired acks and reconnects (S7, C4)


def test_ackbook_retire_keeps_the_ack_out_of_acks_for_the_grace_period_s7() -> None:
    book = AckBook(retired_grace_s=10.0)
    book.record(Stamp("a", 3))
    book.refuse(Stamp("b", 2))
    book.retire("a", 100.0)
    book.retire("never-seen", 100.0)
    assert book.as_dict() == {"b": 2}  # S5: events never carry it again
    assert book.ack_of("a") == 0
    assert book.retired_as_dict(105.0) == {"a": 3}
    book.retire("b", 106.0)
    assert book.retired_as_dict(109.9) == {"a": 3, "b": 2}
    assert book.retired_as_dict(110.0) == {"b": 2}  # a's grace ended; b's not yet
    assert book.retired_as_dict(116.0) == {}
    book.forget("b")  # the view channel forgets without retiring
    assert book.retired_as_dict(116.0) == {}


def test_ackbook_retired_acks_are_bounded_oldest_evicted_first() -> None:
    book = AckBook(max_retired=2)
    for index, sender in enumerate("abc"):
        book.record(Stamp(sender, index + 1))
        book.retire(sender, float(index))
    assert book.retired_as_dict(3.0) == {"b": 2, "c": 3}


def test_ackbook_retired_settings_are_checked() -> None:
    with pytest.raises(LocalProtocolError, match="retired_grace_s"):
        AckBook(retired_grace_s=0)
    with pytest.raises(LocalProtocolError, match="max_retired"):
        AckBook(max_retired=0)
    with pytest.raises(LocalProtocolError, match="max_retired"):
        AckBook(max_retired=True)  # an int to the type checker, not to the protocol


def test_reconnect_resync_drops_what_the_old_nonce_had_processed_c4() -> None:
    state = ClientCausalState("old")
    state.on_event("comp", PARAMS_CHANNEL, {"width": 1, "height": 1, "_acks": {}})
    state.edit_patch("comp", {"width": 10})  # rev 1: the server applied it, the ack was lost with the connection
    state.edit_patch("comp", {"height": 20})  # rev 2: lost in flight
    state.edit_patch("comp", {"fps": -1})  # rev 3: refused (S6), the error lost
    state.reconnected("new")
    assert state.shown("comp") == {"width": 10, "height": 20, "fps": -1}  # no flicker before the resync
    # another client overwrote width after rev 1; the resync brings that and the old nonce's retired ack
    shown = state.on_event(
        "comp", PARAMS_CHANNEL, {"width": 99, "height": 1, "_acks": {"other": 4}}, retired_acks={"old": 1, "x": 7}
    )
    assert shown == {"width": 99, "height": 20, "fps": -1}
    assert state.take_resend() == {"comp": [{"/height": 20}, {"/fps": -1}]}  # never width 10 over 99
    assert state.mask("comp").retired == []


def test_reconnect_resync_also_reads_the_old_nonce_in_acks() -> None:
    # The server may not have seen the close yet (S5 not run): the old nonce is still in acks.
    state = ClientCausalState("old")
    state.edit_patch("comp", {"width": 10})
    state.edit_patch("comp", {"width": 11})
    state.reconnected("new")
    state.on_event("comp", PARAMS_CHANNEL, {"width": 11, "_acks": {"old": 2}}, retired_acks={"old": 1})
    assert state.take_resend() == {}


def test_reconnect_without_retired_acks_resends_everything() -> None:
    # A server without S7 (PROTOCOL.md section 5 only): nothing decides, everything is re-sent.
    state = ClientCausalState("old")
    state.edit_patch("comp", {"width": 10})
    state.reconnected("new")
    state.on_event("comp", PARAMS_CHANNEL, {"width": 10, "_acks": {}})
    assert state.take_resend() == {"comp": [{"/width": 10}]}


def test_two_reconnects_before_a_resync_keep_each_nonce_apart() -> None:
    state = ClientCausalState("n1")
    state.edit_patch("comp", {"a": 1})  # n1 rev 1
    state.edit_patch("comp", {"b": 1})  # n1 rev 2
    state.reconnected("n2")
    state.edit_patch("comp", {"b": 2})  # n2 rev 1 (a partial re-send before the next drop)
    state.edit_patch("comp", {"c": 2})  # n2 rev 2
    state.reconnected("n3")
    assert state.shown("comp") == {"a": 1, "b": 2, "c": 2}
    state.on_event("comp", PARAMS_CHANNEL, {"_acks": {}}, retired_acks={"n1": 1, "n2": 1})
    # n1 rev 1 (a) and n2 rev 1 (b=2) processed; b's newest value came from n2, so n1's b=1 is moot
    assert state.take_resend() == {"comp": [{"/c": 2}]}


def test_a_later_replace_supersedes_every_older_retired_value() -> None:
    state = ClientCausalState("n1")
    state.edit_patch("comp", {"a": 1})
    state.reconnected("n2")
    state.edit_replace("comp", {"b": 2})
    state.reconnected("n3")
    assert [sender for sender, _entries in state.mask("comp").retired] == ["n2"]
    assert state.take_resend() == {"comp": [{"": {"b": 2}}]}


def test_retired_view_predictions_show_until_the_resend() -> None:
    state = ClientCausalState("old")
    state.on_event("comp", VIEW_CHANNEL, {"layers": [{"id": "in_0", "x": 0}], "_acks": {}})
    state.on_event("comp", PARAMS_CHANNEL, {"layers": {"in_0": {"aspect_fit": False}}, "_acks": {}})
    state.edit_patch("comp", {"layers": {"in_0": {"rect": {"x": 5}}}})
    state.reconnected("new")
    assert state.shown("comp", VIEW_CHANNEL)["layers"][0]["x"] == 5
    resend = state.take_resend()
    assert resend == {"comp": [{"/layers/in_0/rect/x": 5}]}
    assert state.mask("comp", VIEW_CHANNEL).retired == []  # re-sending the params predicts it again
