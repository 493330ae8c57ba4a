"""What can be read of a message the server refuses without reading it: its correlation id and stamps.

A text message over the size limit is refused while it arrives, and only its
first ``max_text_bytes`` are ever held; a message over the rate limit is
refused without being parsed (parsing is what a client over its rate must
not be able to make expensive). Their ``too_large`` / ``rate_limited``
errors still need the ``correlation_id`` (so a waiting caller is answered)
and the refused stamps (``_sender``, ``_rev``, ``node_id``: so the client
drops the value it masks, PROTOCOL.md section 5), whenever the message got
far enough for them.

So the head of such a message (at most ``max_chars`` of it) goes through an
incremental JSON parser (ijson), which reports every value that is complete
in it and nothing else: a number cut by the end of the head is never taken
(``"_rev": 12`` cut to ``"_rev": 1`` would name the wrong rev), a string cut
is not taken either. The fields are taken where the envelope puts them, in
whatever order they come: ``correlation_id`` at the top, ``payload.session_id``,
and the stamp of a tune (``payload.node_id``, ``payload.message.<variant>._sender``
and ``._rev``) or of each tune of a batch (``payload.operations[i]...``).
The client library writes the correlation id and each stamp before the
params (``protocol/envelope.py``), so they are in any head it sends.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import ijson  # type: ignore[import-untyped]  # ijson ships no type information

from compositord.protocol.causal import REV_KEY, SENDER_KEY, Stamp, take_stamp
from compositord.protocol.envelope import MAX_CORRELATION_ID
from compositord.protocol.errors import RemoteProtocolError

_TUNES = ("tunenode", "tunenodeasync")
_STAMP_FIELDS = {(SENDER_KEY, "string"), (REV_KEY, "number")}


@dataclass(frozen=True)
class MessageHead:
    """The fields of a refused message that were complete in its head (empty: none could be read)."""

    correlation_id: str | None = None
    session_id: str | None = None
    stamps: tuple[tuple[str, Stamp], ...] = ()  # (node_id, stamp) of every tune whose stamp was read


@dataclass
class _Tune:
    node_id: str | None = None
    stamp: dict[str, Any] = field(default_factory=dict)

    def read(self, where: list[str], kind: str, value: Any) -> None:
        if where == ["node_id"] and kind == "string":
            self.node_id = value
        elif len(where) == 3 and where[0] == "message" and (where[2], kind) in _STAMP_FIELDS:
            self.stamp[where[2]] = value  # a rev that is not an integer (ijson: a Decimal) take_stamp refuses

    def stamped(self) -> tuple[str, Stamp] | None:
        if self.node_id is None or len(self.stamp) != 2:
            return None
        try:
            stamp, _ = take_stamp(self.stamp)
        except RemoteProtocolError:
            return None
        return (self.node_id, stamp) if stamp is not None else None


def read_head(text: str, *, max_chars: int) -> MessageHead:
    """The correlation id, session id and stamps complete within the first ``max_chars`` of ``text``."""
    events: list[tuple[str, str, Any]] = ijson.sendable_list()
    parser = ijson.parse_coro(events)
    with contextlib.suppress(ijson.JSONError):  # not JSON past some point: what was complete before it counts
        parser.send(text[:max_chars].encode("utf-8", "surrogatepass"))
    correlation_id: str | None = None
    session_id: str | None = None
    action: str | None = None
    single = _Tune()
    batch: list[_Tune] = []
    batch_action: list[str | None] = []
    for prefix, kind, value in events:
        where = prefix.split(".")
        if where == ["correlation_id"] and kind == "string" and _echoable(value):
            correlation_id = value
        if where[0] != "payload":
            continue
        rest = where[1:]
        if rest == ["action"] and kind == "string":
            action = value
        elif rest == ["session_id"] and kind == "string":
            session_id = value
        elif rest[:2] == ["operations", "item"]:
            if len(rest) == 2 and kind == "start_map":
                batch.append(_Tune())
                batch_action.append(None)
            elif batch and rest[2:] == ["action"] and kind == "string":
                batch_action[-1] = value
            elif batch:
                batch[-1].read(rest[2:], kind, value)
        else:
            single.read(rest, kind, value)
    tunes: list[_Tune] = []
    if action in _TUNES:
        tunes = [single]
    elif action == "applybatch":
        tunes = [tune for tune, op_action in zip(batch, batch_action, strict=True) if op_action == "tunenode"]
    stamps = tuple(found for found in (tune.stamped() for tune in tunes) if found is not None)
    return MessageHead(correlation_id, session_id, stamps)


def _echoable(value: str) -> bool:
    """A correlation id that can be sent back: not too long, and with a UTF-8 form (no lone surrogate)."""
    if len(value) > MAX_CORRELATION_ID:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
