"""The daemon's side of the envelope: requests in, responses and events out.

The session logic works on :class:`Request` (a correlation id and an
:class:`Action` with its checked fields) and on :class:`Tune` (one tune, with
its stamp taken and its ``_`` keys stripped), whatever the wire shape; this
module is the one place that turns text into those and payloads into text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from compositord.protocol import causal, pointer
from compositord.protocol.causal import Stamp
from compositord.protocol.errors import ErrorCode, RemoteProtocolError

# action -> {field: (type, required)}
_STR = str
_FIELDS: dict[str, dict[str, tuple[type | tuple[type, ...], bool]]] = {
    "getpipeline": {"session_id": (_STR, True)},
    "listsessions": {},
    "createsession": {"name": (_STR, True), "pipeline": (dict, True)},
    "destroysession": {"session_id": (_STR, True)},
    "addnode": {"session_id": (_STR, True), "node_id": (_STR, True), "kind": (_STR, True), "params": (dict, False)},
    "removenode": {"session_id": (_STR, True), "node_id": (_STR, True)},
    "connect": {
        "session_id": (_STR, True),
        "from_node": (_STR, True),
        "from_pin": (_STR, True),
        "to_node": (_STR, True),
        "to_pin": (_STR, True),
    },
    "tunenode": {"session_id": (_STR, True), "node_id": (_STR, True), "message": (dict, True)},
    "applybatch": {"session_id": (_STR, True), "operations": (list, True), "atomic": (bool, False)},
}
_FIELDS["disconnect"] = _FIELDS["connect"]
_FIELDS["tunenodeasync"] = _FIELDS["tunenode"]

BATCHABLE = ("tunenode", "addnode", "removenode", "connect", "disconnect")
MAX_BATCH_OPERATIONS = 1024
MAX_CORRELATION_ID = 256
TUNE_VARIANTS = ("UpdateParams", "PatchParams")


@dataclass(frozen=True)
class Action:
    name: str
    fields: Mapping[str, Any]


@dataclass(frozen=True)
class Request:
    correlation_id: str | None
    action: Action


@dataclass(frozen=True)
class Tune:
    node_id: str
    replace: bool  # UpdateParams (True) or PatchParams (False)
    body: dict[str, Any]  # stamp taken, every "_" key stripped
    stamp: Stamp | None
    path: str  # where the tune's fields sit ("/payload", "/payload/operations/3")
    body_path: str  # the pointer of the body ("/payload/message/PatchParams")


@dataclass(frozen=True)
class BatchOperation:
    name: str
    fields: Mapping[str, Any]
    path: str
    tune: Tune | None = field(default=None)


def _bad(code: ErrorCode, path: str, message: str) -> RemoteProtocolError:
    return RemoteProtocolError(code, f"{path or '/'}: {message}", path)


def _check_fields(name: str, payload: Mapping[str, Any], path: str) -> dict[str, Any]:
    spec = _FIELDS[name]
    out: dict[str, Any] = {}
    for key, (kind, required) in spec.items():
        where = pointer.join(path, key)
        if key not in payload:
            if required:
                raise _bad(ErrorCode.BAD_ENVELOPE, where, f"{name} needs {key!r}")
            continue
        value = payload[key]
        if isinstance(value, bool) and kind is not bool:
            raise _bad(ErrorCode.BAD_ENVELOPE, where, f"must be {_kind_name(kind)}")
        if not isinstance(value, kind):
            raise _bad(ErrorCode.BAD_ENVELOPE, where, f"must be {_kind_name(kind)}")
        out[key] = value
    allowed = set(spec) | {"action"}
    for key in payload:
        if key not in allowed:
            raise _bad(ErrorCode.BAD_ENVELOPE, pointer.join(path, str(key)), f"unknown field for {name}")
    return out


def _kind_name(kind: type | tuple[type, ...]) -> str:
    return {str: "a string", dict: "an object", list: "a list", bool: "true or false"}.get(kind, str(kind))  # type: ignore[call-overload]


def parse_request(text: str) -> Request:
    """A checked request; :class:`RemoteProtocolError` (with a JSON pointer) otherwise."""
    try:
        document = json.loads(text, parse_constant=_refuse_constant)
    except ValueError as exc:
        raise RemoteProtocolError(ErrorCode.BAD_JSON, f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise _bad(ErrorCode.BAD_ENVELOPE, "", "a message must be a JSON object")
    correlation_id = document.get("correlation_id")
    if correlation_id is not None and (not isinstance(correlation_id, str) or len(correlation_id) > MAX_CORRELATION_ID):
        raise _bad(ErrorCode.BAD_ENVELOPE, "/correlation_id", f"must be a string of at most {MAX_CORRELATION_ID} characters")
    if document.get("type") != "request":
        raise _bad(ErrorCode.BAD_ENVELOPE, "/type", 'a client sends only messages of type "request"')
    payload = document.get("payload")
    if not isinstance(payload, dict):
        raise _bad(ErrorCode.BAD_ENVELOPE, "/payload", "must be an object")
    name = payload.get("action")
    if not isinstance(name, str):
        raise _bad(ErrorCode.BAD_ENVELOPE, "/payload/action", "must be a string")
    if name not in _FIELDS:
        raise _bad(ErrorCode.UNKNOWN_ACTION, "/payload/action", f"unknown action {name!r}; known: {', '.join(sorted(_FIELDS))}")
    return Request(correlation_id, Action(name, _check_fields(name, payload, "/payload")))


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def tune_of(action: Action, path: str = "/payload") -> Tune:
    message = action.fields["message"]
    message_path = pointer.join(path, "message")
    variants = [key for key in message if key in TUNE_VARIANTS]
    if len(message) != 1 or len(variants) != 1:
        raise _bad(ErrorCode.BAD_ENVELOPE, message_path, "must hold exactly one of UpdateParams or PatchParams")
    variant = variants[0]
    body_path = pointer.join(message_path, variant)
    stamp, body = causal.take_stamp(message[variant], path=body_path)
    return Tune(action.fields["node_id"], variant == "UpdateParams", body, stamp, path, body_path)


def batch_operations_of(action: Action) -> list[BatchOperation]:
    raw = action.fields["operations"]
    if len(raw) > MAX_BATCH_OPERATIONS:
        raise _bad(ErrorCode.TOO_LARGE, "/payload/operations", f"at most {MAX_BATCH_OPERATIONS} operations")
    if action.fields.get("atomic", True) is not True:
        raise _bad(ErrorCode.BAD_ENVELOPE, "/payload/atomic", "only atomic batches are supported: atomic must be true")
    operations = []
    for index, item in enumerate(raw):
        path = pointer.join("/payload/operations", index)
        if not isinstance(item, dict):
            raise _bad(ErrorCode.BAD_ENVELOPE, path, "must be an object")
        name = item.get("action")
        if name not in BATCHABLE:
            raise _bad(ErrorCode.UNKNOWN_ACTION, pointer.join(path, "action"), f"must be one of {', '.join(BATCHABLE)}")
        # The batch names the session once; an operation may repeat it, but only the same one.
        if "session_id" in item and item["session_id"] != action.fields["session_id"]:
            raise _bad(ErrorCode.BAD_ENVELOPE, pointer.join(path, "session_id"), "must be the batch's session_id")
        fields = _check_fields(name, {"session_id": action.fields["session_id"], **item}, path)
        op_action = Action(name, fields)
        tune = tune_of(op_action, path) if name == "tunenode" else None
        operations.append(BatchOperation(name, fields, path, tune))
    return operations


def correlation_id_of(text: str) -> str | None:
    """The correlation id of a message that failed to parse, when it can be found."""
    try:
        document = json.loads(text)
    except ValueError:
        return None
    value = document.get("correlation_id") if isinstance(document, dict) else None
    return value if isinstance(value, str) and len(value) <= MAX_CORRELATION_ID else None


def encode_response(payload: Mapping[str, Any], correlation_id: str | None) -> str:
    message: dict[str, Any] = {"type": "response", "payload": payload}
    if correlation_id is not None:
        message["correlation_id"] = correlation_id
    return json.dumps(message, separators=(",", ":"), allow_nan=False)


def encode_event(payload: Mapping[str, Any]) -> str:
    return json.dumps({"type": "event", "payload": payload}, separators=(",", ":"), allow_nan=False)
