"""Error responses stay small: a request of a few kilobytes must not buy an answer of hundreds.

A 62 KB ``createsession`` with 5,120 bad fields got a 686 KB error list (every field error
listed, each with its path); now 50 are listed and the rest counted."""

from __future__ import annotations

import json
from typing import Any

import pytest

from compositord.protocol import envelope, params
from compositord.protocol.errors import MAX_LISTED_ERRORS, RemoteProtocolError

COMP = "video::compositor"


def refusal(fn: Any, *args: Any, **kwargs: Any) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        fn(*args, **kwargs)
    return info.value


def hostile_createsession() -> str:
    """About 60 KB: 256 nodes with 64-character ids, each with 20 unknown keys (one error per 7 bytes)."""
    keys = {f"{chr(97 + i % 26)}{i // 26}": 0 for i in range(20)}
    nodes = {f"n{index:03d}" + "x" * 60: {"kind": "video::push", "params": dict(keys)} for index in range(256)}
    request = envelope.Request("createsession", {"name": "x", "pipeline": {"nodes": nodes}}, "c1")
    return envelope.serialize(request)


def test_an_error_lists_at_most_50_fields_and_counts_the_rest() -> None:
    text = hostile_createsession()
    assert 50_000 < len(text) <= envelope.MAX_TEXT_BYTES
    request = envelope.parse_message(text)
    error = refusal(envelope.parse_action, request)
    total = len(error.errors)
    assert total == 256 * 20
    answer = envelope.serialize(envelope.error_response(error, "c1"))
    payload = json.loads(answer)["payload"]
    assert len(payload["errors"]) == MAX_LISTED_ERRORS
    assert payload["errors_omitted"] == total - MAX_LISTED_ERRORS
    assert payload["message"].startswith(f"{total} errors; first: ")
    assert len(answer) < len(text) / 4, f"a {len(text)}-byte request got a {len(answer)}-byte answer"
    response = envelope.parse_message(answer)
    assert isinstance(response, envelope.Response)
    reply = envelope.ErrorReply.from_response(response)
    assert len(reply.errors) == MAX_LISTED_ERRORS


def test_echoed_values_are_cut_short() -> None:
    error = refusal(params.validate, COMP, {"output_format": "y" * 4000})
    assert len(error.errors[0].message) < 200
    error = refusal(params.validate_pipeline, {"nodes": {"a": {"kind": "k" * 60_000}}})
    assert max(len(e.message) for e in error.errors) < 400
