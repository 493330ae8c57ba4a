"""protocol/message_head.py: the correlation id and stamps of a message refused unread (too large, rate
limited), from its head only, never a value the head cuts."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from compositord.protocol import envelope
from compositord.protocol.causal import Stamp
from compositord.protocol.message_head import MessageHead, read_head


def tune_text(rev: int, *, padding: int = 0, cid: str = "c7") -> str:
    tune = envelope.TuneNode(
        "s1", "comp", envelope.PATCH, {"text_overlays": [{"id": "t", "text": "x" * padding}]}, Stamp("me", rev)
    )
    return envelope.serialize(tune.to_request(cid))


def test_a_tune_cut_inside_its_params_names_its_correlation_id_session_and_stamp() -> None:
    text = tune_text(41, padding=100_000)
    assert read_head(text, max_chars=65536) == MessageHead("c7", "s1", (("comp", Stamp("me", 41)),))


def test_the_client_library_writes_the_stamp_before_the_params() -> None:
    text = tune_text(5, padding=1000)
    assert text.index('"_sender"') < text.index('"text_overlays"')


@pytest.mark.parametrize("cut", range(1, 120))
def test_a_value_cut_by_the_end_of_the_head_is_never_taken(cut: int) -> None:
    text = json.dumps(
        {
            "type": "request",
            "correlation_id": "abc",
            "payload": {
                "action": "tunenode",
                "session_id": "s1",
                "node_id": "comp",
                "message": {"PatchParams": {"_sender": "me", "_rev": 123456, "fps": 1}},
            },
        }
    )
    head = read_head(text, max_chars=cut)
    whole = read_head(text, max_chars=len(text))
    assert whole == MessageHead("abc", "s1", (("comp", Stamp("me", 123456)),))
    assert head.correlation_id in (None, "abc")
    assert head.session_id in (None, "s1")
    assert head.stamps in ((), whole.stamps)  # never a rev cut to 1, 12, 123...


def test_every_tune_of_a_batch_and_nothing_else() -> None:
    batch = envelope.ApplyBatch(
        "s1",
        (
            envelope.TuneNode("s1", "a", envelope.PATCH, {"fps": 1}, Stamp("me", 3)),
            envelope.AddNode("s1", "b", "video::colorbars", {"width": 16, "height": 16}),
            envelope.TuneNode("s1", "c", envelope.UPDATE, {"width": 16, "height": 16}, Stamp("me", 4)),
            envelope.TuneNode("s1", "d", envelope.PATCH, {"text": "y" * 5000}, Stamp("me", 5)),
        ),
    )
    text = envelope.serialize(batch.to_request("b1"))
    assert read_head(text, max_chars=len(text)).stamps == (("a", Stamp("me", 3)), ("c", Stamp("me", 4)), ("d", Stamp("me", 5)))
    assert read_head(text, max_chars=text.index('"y')).stamps == (
        ("a", Stamp("me", 3)),
        ("c", Stamp("me", 4)),
        ("d", Stamp("me", 5)),
    )
    assert read_head(text, max_chars=text.index('"_sender":"me","_rev":5')).stamps == (
        ("a", Stamp("me", 3)),
        ("c", Stamp("me", 4)),
    )


@pytest.mark.parametrize(
    "text",
    [
        "not json at all",
        '{"correlation_id": "' + "x" * 300 + '"}',  # too long to echo
        '{"correlation_id": 7, "payload": {"action": "tunenode", "node_id": "n", "message": {"P": {"_sender": "me", "_rev": 1.5}}}}',
        '{"payload": {"action": "tunenode", "node_id": "n", "message": {"P": {"_sender": "me", "_rev": true}}}}',
        '{"payload": {"action": "getpipeline", "node_id": "n", "message": {"P": {"_sender": "me", "_rev": 1}}}}',
    ],
)
def test_nothing_is_made_up(text: str) -> None:
    head = read_head(text, max_chars=len(text))
    assert head.correlation_id is None and head.stamps == ()


@given(st.text(max_size=300), st.integers(0, 400))
def test_any_text_reads_without_raising(text: str, cut: int) -> None:
    read_head(text, max_chars=cut)
