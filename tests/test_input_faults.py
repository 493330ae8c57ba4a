"""Faults of inputs: a node in error is told with ``nodestatechanged`` and shown in ``getpipeline``."""

from __future__ import annotations

import pytest

from compositord.protocol import envelope
from compositord.protocol.errors import LocalProtocolError


def test_node_state_event_shapes() -> None:
    failed = envelope.node_state_changed("s", "clip", "cannot open clip.mp4: No such file")
    assert failed.event == "nodestatechanged"
    assert failed.payload == {"session_id": "s", "node_id": "clip", "state": {"error": "cannot open clip.mp4: No such file"}}
    cleared = envelope.node_state_changed("s", "clip", None)
    assert cleared.payload["state"] == "ok"
    assert envelope.parse_message(envelope.serialize(failed)) == failed
    with pytest.raises(LocalProtocolError):
        envelope.node_state_changed("s", "clip", "")
