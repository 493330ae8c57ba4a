"""The messages of PROTOCOL.md sections 2-4 and 7: parse, type, build, serialize.

Wire shape of every text message::

    {"type": "request" | "response" | "event",
     "correlation_id": "<optional; requests and responses only>",
     "payload": {"action" | "event": "<lowercase name>", ...}}

In memory a message is a frozen :class:`Request`, :class:`Response` or
:class:`Event`; its ``payload`` holds every payload key except the tag
(``action`` / ``event``), which is the ``action`` / ``event`` field. The
constructors check their fields, so an invalid message object cannot exist
(our own misuse is a :class:`LocalProtocolError`).

Peers' input: :func:`parse_message` and :func:`parse_action` turn any input
(bad UTF-8, bad JSON, ``NaN``/``Infinity``, duplicate keys, nesting deeper
than :data:`MAX_DEPTH`, integers of more than :data:`MAX_INT_DIGITS` digits,
oversize text, wrong shapes) into a :class:`RemoteProtocolError` whose
``path`` is the JSON pointer of the bad field (``/payload/node_id``), never
into another exception.

Typed actions (:func:`parse_action`) strip ``_`` keys from params, take the
stamp of a tune (:func:`compositord.protocol.causal.take_stamp`) and validate
what can be validated without the daemon's state: node params of ``addnode``
against their kind, the whole pipeline of ``createsession``
(:mod:`compositord.protocol.params`). A tune's params are validated by the
daemon, which knows the node's kind and current params. Each typed action
has ``to_request()``, so a client builds exactly what the server parses.

Pushed video frames (section 6) live in :mod:`compositord.protocol.frames`
and are re-exported here.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from compositord.protocol import params as node_params
from compositord.protocol import pointer, streamkit
from compositord.protocol.causal import ACKS_KEY, REV_KEY, SENDER_KEY, SEQ_KEY, Stamp, strip_private, take_stamp
from compositord.protocol.errors import ErrorCode, FieldError, LocalProtocolError, RemoteProtocolError

# Re-exported, as section 6 of the same protocol; `X as X` is what marks a re-export for type checkers.
from compositord.protocol.frames import FRAME_MAGIC as FRAME_MAGIC
from compositord.protocol.frames import FRAME_VERSION as FRAME_VERSION
from compositord.protocol.frames import HEADER_SIZE as HEADER_SIZE
from compositord.protocol.frames import FrameHeader as FrameHeader
from compositord.protocol.frames import frame_size as frame_size
from compositord.protocol.frames import node_id_hash as node_id_hash
from compositord.protocol.frames import pack_frame_header as pack_frame_header
from compositord.protocol.frames import parse_frame_header as parse_frame_header
from compositord.protocol.scenes import ANIMATE_KEY, TRANSITION_ONCE_KEY, AnimateSpec, parse_animate

PROTOCOL_VERSION = 1
PREVIEW_CONTENT_TYPE = "image/jpeg"
PROTOCOL_HEADER = "X-Compositord-Protocol"
CONTROL_PATH = "/api/v1/control"

MAX_TEXT_BYTES = 64 * 1024
MAX_DEPTH = 64
MAX_INT_DIGITS = 30
MAX_CORRELATION_ID = 256
MAX_ID_LENGTH = 128
MAX_BATCH_OPERATIONS = 1024

MESSAGE_TYPES = ("request", "response", "event")
_NAME = re.compile(r"[a-z]+")
_ENVELOPE_KEYS = ("type", "correlation_id", "payload")
# A JSON escape of a UTF-16 surrogate; only then can a parsed string hold a lone one.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")

UPDATE = "update"
PATCH = "patch"
TUNE_VARIANTS = {"UpdateParams": UPDATE, "PatchParams": PATCH}


# --------------------------------------------------------------------------- messages


def _check_fields(kind: str, tag: str, name: Any, payload: Any, correlation_id: Any) -> None:
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise LocalProtocolError(f"{kind}: {tag} must be a lowercase name, got {name!r}")
    if not isinstance(payload, Mapping):
        raise LocalProtocolError(f"{kind}: payload must be a mapping, got {type(payload).__name__}")
    if tag in payload:
        raise LocalProtocolError(f"{kind}: the payload must not repeat the {tag!r} tag")
    if correlation_id is not None and (not isinstance(correlation_id, str) or len(correlation_id) > MAX_CORRELATION_ID):
        raise LocalProtocolError(f"{kind}: correlation_id must be a string of at most {MAX_CORRELATION_ID} characters")


@dataclass(frozen=True)
class Request:
    action: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    correlation_id: str | None = None

    def __post_init__(self) -> None:
        _check_fields("Request", "action", self.action, self.payload, self.correlation_id)


@dataclass(frozen=True)
class Response:
    action: str  # "success", "error" or a named result ("pipeline", ...)
    payload: Mapping[str, Any] = field(default_factory=dict)
    correlation_id: str | None = None

    def __post_init__(self) -> None:
        _check_fields("Response", "action", self.action, self.payload, self.correlation_id)


@dataclass(frozen=True)
class Event:
    event: str
    payload: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_fields("Event", "event", self.event, self.payload, None)


Message = Request | Response | Event


# --------------------------------------------------------------------------- text -> message


class _Refused(Exception):
    """Raised from inside json.loads hooks; becomes a bad_json error."""


def _refuse_constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON value")


def _parse_int(text: str) -> int:
    if len(text) - text.startswith("-") > MAX_INT_DIGITS:
        raise _Refused(f"integer with more than {MAX_INT_DIGITS} digits")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"number {text[:40]} is out of range")
    return value


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Parsers disagree on which duplicate wins (first, last, error): refuse the ambiguity.
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:  # pragma: no branch - a duplicate exists, so the loop never runs out
            if key in seen:
                raise _Refused(f"duplicate key {key[:64]!r} in an object")
            seen.add(key)
    return result


def _decode(data: str | bytes | bytearray | memoryview, max_bytes: int) -> str:
    if isinstance(data, str):
        if len(data) > max_bytes:  # a character is at least one byte
            raise RemoteProtocolError(ErrorCode.TOO_LARGE, f"text message over the limit of {max_bytes} bytes")
        try:
            size = len(data.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise RemoteProtocolError(
                ErrorCode.BAD_JSON, f"not valid Unicode text: lone surrogate at character {exc.start}"
            ) from None
        if size > max_bytes:
            raise RemoteProtocolError(ErrorCode.TOO_LARGE, f"text message of {size} bytes is over the limit of {max_bytes}")
        return data
    if isinstance(data, (bytes, bytearray, memoryview)):
        if len(data) > max_bytes:
            raise RemoteProtocolError(ErrorCode.TOO_LARGE, f"text message of {len(data)} bytes is over the limit of {max_bytes}")
        try:
            return bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RemoteProtocolError(ErrorCode.BAD_JSON, f"not UTF-8: invalid byte at offset {exc.start}") from None
    raise LocalProtocolError(f"parse_message takes str or bytes, not {type(data).__name__}")


def _check_tree(document: Any, check_strings: bool) -> None:
    """Depth at most MAX_DEPTH; with ``check_strings``, no lone surrogate in any key or string."""
    stack: list[tuple[Any, int, str]] = [(document, 0, "")]
    while stack:
        value, depth, path = stack.pop()
        if isinstance(value, (dict, list)):
            if depth >= MAX_DEPTH:
                raise RemoteProtocolError(ErrorCode.BAD_JSON, f"{path}: nested deeper than {MAX_DEPTH} levels", path)
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, child in items:
                child_path = pointer.join(path, key)
                if check_strings and isinstance(key, str):
                    _check_string(key, child_path)
                stack.append((child, depth + 1, child_path))
        elif check_strings and isinstance(value, str):
            _check_string(value, path)


def _check_string(text: str, path: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise RemoteProtocolError(ErrorCode.BAD_JSON, f"{path or '/'}: lone UTF-16 surrogate escape", path) from None


def load_json(data: str | bytes | bytearray | memoryview, *, max_bytes: int = MAX_TEXT_BYTES, strict: bool = True) -> Any:
    """Strict JSON: what :func:`parse_message` reads before it looks at the envelope.

    ``strict=False`` (a client reading its server) leaves out the checks that take a Python call per number
    and per object (duplicate keys, integer lengths, infinite floats), as a browser's ``JSON.parse`` does:
    they guard the daemon against its clients, and in a client they took half of the parse's time (43 -> 23 µs for
    a view data event of 0.7 KB; the parse was 12 % of an editing client's CPU in control_latency).
    ``NaN`` and ``Infinity`` spelled out, the size, the encoding, the depth and lone surrogates are checked
    either way.
    """
    text = _decode(data, max_bytes)
    hooks: dict[str, Any] = (
        {"parse_int": _parse_int, "parse_float": _parse_float, "object_pairs_hook": _unique_object} if strict else {}
    )
    try:
        document = json.loads(text, parse_constant=_refuse_constant, **hooks)
    except _Refused as exc:
        raise RemoteProtocolError(ErrorCode.BAD_JSON, f"not JSON: {exc}") from None
    except RecursionError:
        raise RemoteProtocolError(ErrorCode.BAD_JSON, f"not JSON: nested deeper than {MAX_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise RemoteProtocolError(ErrorCode.BAD_JSON, f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    # Counting brackets (strings included) bounds the depth from above: cheap, and the tree walk
    # runs only for documents that could be too deep or hold a surrogate escape.
    check_strings = _SURROGATE_ESCAPE.search(text) is not None
    if check_strings or text.count("[") + text.count("{") > MAX_DEPTH:
        _check_tree(document, check_strings)
    return document


def parse_message(data: str | bytes | bytearray | memoryview, *, max_bytes: int = MAX_TEXT_BYTES, strict: bool = True) -> Message:
    """One text message of a peer as :class:`Request`, :class:`Response` or :class:`Event` (``strict``: see
    :func:`load_json`)."""
    return message_from_json(load_json(data, max_bytes=max_bytes, strict=strict))


def message_from_json(document: Any) -> Message:
    """The envelope check of :func:`parse_message`, for a document already decoded."""
    if not isinstance(document, Mapping):
        raise _bad("", "a message must be a JSON object")
    errors: list[FieldError] = [
        FieldError(pointer.join("", key), "unknown envelope field") for key in document if key not in _ENVELOPE_KEYS
    ]
    kind = document.get("type")
    if "type" not in document:
        errors.append(FieldError("/type", "required"))
    elif kind not in MESSAGE_TYPES:
        errors.append(FieldError("/type", f"must be one of {', '.join(MESSAGE_TYPES)}"))
    correlation_id = document.get("correlation_id")
    if correlation_id is not None:
        if kind == "event":
            errors.append(FieldError("/correlation_id", "an event carries no correlation_id"))
        elif not isinstance(correlation_id, str) or len(correlation_id) > MAX_CORRELATION_ID:
            errors.append(FieldError("/correlation_id", f"must be a string of at most {MAX_CORRELATION_ID} characters"))
    payload = document.get("payload")
    tag = "event" if kind == "event" else "action"
    if "payload" not in document:
        errors.append(FieldError("/payload", "required"))
    elif not isinstance(payload, Mapping):
        errors.append(FieldError("/payload", "must be an object"))
    elif tag not in payload:
        errors.append(FieldError(f"/payload/{tag}", "required"))
    elif not isinstance(payload[tag], str) or _NAME.fullmatch(payload[tag]) is None:
        errors.append(FieldError(f"/payload/{tag}", "must be a lowercase name (letters a-z)"))
    if errors:
        raise RemoteProtocolError.from_field_errors(ErrorCode.BAD_ENVELOPE, errors)
    assert isinstance(payload, Mapping)
    rest = {key: value for key, value in payload.items() if key != tag}
    if kind == "request":
        return Request(payload[tag], rest, correlation_id)
    if kind == "response":
        return Response(payload[tag], rest, correlation_id)
    return Event(payload[tag], rest)


def correlation_id_of(message: str | bytes, *, max_chars: int | None = None) -> str | None:
    """The best-effort correlation id of a message the envelope refused, so the error can echo it.

    None when the message is longer than ``max_chars`` (not worth parsing), is not a JSON object (plain JSON here, not the strict reading of
    :func:`load_json`: the message was refused already, only its id is wanted), has no string
    ``correlation_id``, or the id could not be sent back: longer than :data:`MAX_CORRELATION_ID`, or
    holding a lone UTF-16 surrogate (``"\\ud800"`` parses, but has no UTF-8 form).
    """
    if max_chars is not None and len(message) > max_chars:
        return None
    if not isinstance(message, str):
        try:
            message = bytes(message).decode("utf-8")
        except UnicodeDecodeError:
            return None
    try:
        document = json.loads(message)
    except (ValueError, RecursionError):
        return None
    value = document.get("correlation_id") if isinstance(document, dict) else None
    if not isinstance(value, str) or len(value) > MAX_CORRELATION_ID:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return value


def _bad(path: str, message: str, code: ErrorCode = ErrorCode.BAD_ENVELOPE) -> RemoteProtocolError:
    return RemoteProtocolError(code, f"{path or '/'}: {message}", path)


# --------------------------------------------------------------------------- message -> text


def to_json(message: Message) -> dict[str, Any]:
    """The wire document of ``message`` (what :func:`serialize` encodes)."""
    if isinstance(message, Event):
        return {"type": "event", "payload": {"event": message.event, **message.payload}}
    if isinstance(message, (Request, Response)):
        document: dict[str, Any] = {"type": "request" if isinstance(message, Request) else "response"}
        if message.correlation_id is not None:
            document["correlation_id"] = message.correlation_id
        document["payload"] = {"action": message.action, **message.payload}
        return document
    raise LocalProtocolError(f"not a message: {type(message).__name__}")


def serialize(message: Message) -> str:
    """Compact JSON text (UTF-8 when encoded); NaN, infinities and non-JSON values are our own bug."""
    try:
        return json.dumps(to_json(message), separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise LocalProtocolError(f"cannot serialize {type(message).__name__}: {exc}") from None


# --------------------------------------------------------------------------- typed actions


class _Reader:
    """Reads the fields of one action's payload; collects every shape error with its path."""

    def __init__(self, action: str, payload: Mapping[str, Any], base: str, allowed: Sequence[str]) -> None:
        self.action = action
        self.payload = payload
        self.base = base
        self.errors = [
            FieldError(pointer.join(base, key), f"unknown field for {action}") for key in payload if key not in allowed
        ]

    def _path(self, key: str) -> str:
        return pointer.join(self.base, key)

    def _missing(self, key: str) -> bool:
        if key in self.payload:
            return False
        self.errors.append(FieldError(self._path(key), f"required by {self.action}"))
        return True

    def string(self, key: str, *, max_len: int = MAX_ID_LENGTH, pattern: str | None = None, pattern_doc: str = "") -> str:
        if self._missing(key):
            return ""
        value = self.payload[key]
        if not isinstance(value, str):
            self.errors.append(FieldError(self._path(key), "must be a string"))
            return ""
        if not 1 <= len(value) <= max_len:
            self.errors.append(FieldError(self._path(key), f"must have 1..{max_len} characters"))
        elif pattern is not None and re.fullmatch(pattern, value) is None:
            self.errors.append(FieldError(self._path(key), f"must be {pattern_doc}"))
        return value

    def node_id(self, key: str = "node_id") -> str:
        return self.string(
            key, max_len=64, pattern=node_params.NODE_ID_PATTERN, pattern_doc="a node id: letters, digits, '_', '.', '-'"
        )

    def boolean(self, key: str, default: bool) -> bool:
        value = self.payload.get(key, default)
        if not isinstance(value, bool):
            self.errors.append(FieldError(self._path(key), "must be true or false"))
            return default
        return value

    def mapping(self, key: str, *, required: bool = True) -> Mapping[str, Any]:
        if key not in self.payload and not required:
            return {}
        if self._missing(key):
            return {}
        value = self.payload[key]
        if not isinstance(value, Mapping):
            self.errors.append(FieldError(self._path(key), "must be an object"))
            return {}
        return value

    def array(self, key: str) -> list[Any]:
        if self._missing(key):
            return []
        value = self.payload[key]
        if not isinstance(value, list):
            self.errors.append(FieldError(self._path(key), "must be an array"))
            return []
        return value

    def done(self) -> None:
        if self.errors:
            raise RemoteProtocolError.from_field_errors(ErrorCode.BAD_ENVELOPE, self.errors)


def prefixed_error(error: RemoteProtocolError, prefix: str) -> RemoteProtocolError:
    """The same error with every path moved under ``prefix``: where the document that was checked
    (params, a pipeline) sits in the request, since such errors are relative to that document."""
    if error.errors:
        return RemoteProtocolError.from_field_errors(error.code, [FieldError(prefix + e.path, e.message) for e in error.errors])
    path = prefix + (error.path or "")
    message = f"{path or '/'}: {error.message}" if error.path is None else error.message.replace(error.path, path, 1)
    return RemoteProtocolError(error.code, message, path)


@dataclass(frozen=True)
class GetPipeline:
    ACTION: ClassVar[str] = "getpipeline"
    session_id: str

    def to_request(self, correlation_id: str | None = None) -> Request:
        return Request(self.ACTION, {"session_id": self.session_id}, correlation_id)


@dataclass(frozen=True)
class ListSessions:
    ACTION: ClassVar[str] = "listsessions"

    def to_request(self, correlation_id: str | None = None) -> Request:
        return Request(self.ACTION, {}, correlation_id)


@dataclass(frozen=True)
class CreateSession:
    ACTION: ClassVar[str] = "createsession"
    name: str | None  # None: named after its id
    pipeline: Mapping[str, Any]  # normalized by params.validate_pipeline; empty when not given
    images: tuple[streamkit.InlineImage, ...] = ()  # inline images of the params, to store first

    def to_request(self, correlation_id: str | None = None) -> Request:
        return Request(self.ACTION, {"name": self.name, "pipeline": self.pipeline}, correlation_id)


@dataclass(frozen=True)
class DestroySession:
    ACTION: ClassVar[str] = "destroysession"
    session_id: str

    def to_request(self, correlation_id: str | None = None) -> Request:
        return Request(self.ACTION, {"session_id": self.session_id}, correlation_id)


@dataclass(frozen=True)
class AddNode:
    ACTION: ClassVar[str] = "addnode"
    session_id: str
    node_id: str
    kind: str
    params: Mapping[str, Any]  # validated durable params of ``kind``
    images: tuple[streamkit.InlineImage, ...] = ()  # inline images of the params, to store first

    def operation(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "kind": self.kind, "params": self.params}

    def to_request(self, correlation_id: str | None = None) -> Request:
        return Request(self.ACTION, {"session_id": self.session_id, **self.operation()}, correlation_id)


@dataclass(frozen=True)
class RemoveNode:
    ACTION: ClassVar[str] = "removenode"
    session_id: str
    node_id: str

    def operation(self) -> dict[str, Any]:
        return {"node_id": self.node_id}

    def to_request(self, correlation_id: str | None = None) -> Request:
        return Request(self.ACTION, {"session_id": self.session_id, **self.operation()}, correlation_id)


@dataclass(frozen=True)
class _Link:
    """The fields of ``connect`` and ``disconnect`` (two separate classes, so isinstance tells them apart)."""

    ACTION: ClassVar[str]
    session_id: str
    from_node: str
    from_pin: str
    to_node: str
    to_pin: str

    def operation(self) -> dict[str, Any]:
        return {"from_node": self.from_node, "from_pin": self.from_pin, "to_node": self.to_node, "to_pin": self.to_pin}

    def to_request(self, correlation_id: str | None = None) -> Request:
        return Request(self.ACTION, {"session_id": self.session_id, **self.operation()}, correlation_id)


_LinkT = TypeVar("_LinkT", bound=_Link)


@dataclass(frozen=True)
class Connect(_Link):
    ACTION: ClassVar[str] = "connect"


@dataclass(frozen=True)
class Disconnect(_Link):
    ACTION: ClassVar[str] = "disconnect"


@dataclass(frozen=True)
class TuneNode:
    """``tunenode`` (``sync``) or ``tunenodeasync``: replace (``update``) or merge-patch (``patch``) a node's params.

    ``params`` has every ``_`` key stripped at any depth; ``stamp`` is the
    ``(_sender, _rev)`` taken out of the message, or None; ``animate`` the
    message's ``_animate`` (an animated edit, protocol/scenes.py), or None;
    ``transition`` the message's ``_transition`` (how the change of
    ``program_scene`` it makes is shown, this once), or None.
    """

    ACTION: ClassVar[str] = "tunenode"
    session_id: str
    node_id: str
    mode: str  # UPDATE or PATCH
    params: Mapping[str, Any]
    stamp: Stamp | None = None
    sync: bool = True
    images: tuple[streamkit.InlineImage, ...] = ()  # inline images of the params, to store first
    animate: AnimateSpec | None = None
    transition: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.mode not in (UPDATE, PATCH):
            raise LocalProtocolError(f"TuneNode mode must be {UPDATE!r} or {PATCH!r}, got {self.mode!r}")

    @property
    def variant(self) -> str:
        return "UpdateParams" if self.mode == UPDATE else "PatchParams"

    def operation(self) -> dict[str, Any]:
        # The stamp goes first: a message refused as too large is read only as far as its limit, and
        # the server names the stamp it read there so the client drops its value (protocol/message_head.py).
        body: dict[str, Any] = self.stamp.to_json() if self.stamp is not None else {}
        body.update(self.params)
        if self.animate is not None:
            body[ANIMATE_KEY] = self.animate.to_json()
        if self.transition is not None:
            body[TRANSITION_ONCE_KEY] = dict(self.transition)
        return {"node_id": self.node_id, "message": {self.variant: body}}

    def to_request(self, correlation_id: str | None = None) -> Request:
        action = self.ACTION if self.sync else "tunenodeasync"
        return Request(action, {"session_id": self.session_id, **self.operation()}, correlation_id)


BatchOperation = AddNode | RemoveNode | Connect | Disconnect | TuneNode


@dataclass(frozen=True)
class Take:
    """``take``: a compositor's ``preview_scene`` goes to program and its program scene to preview, in one
    stamped change of its params, shown with ``transition`` (a patch of the params' ``transition``) or
    the one the params hold."""

    ACTION: ClassVar[str] = "take"
    session_id: str
    node_id: str
    stamp: Stamp | None = None
    transition: Mapping[str, Any] | None = None

    def to_request(self, correlation_id: str | None = None) -> Request:
        payload: dict[str, Any] = {"session_id": self.session_id, "node_id": self.node_id}
        if self.transition is not None:
            payload["transition"] = dict(self.transition)
        if self.stamp is not None:
            payload.update(self.stamp.to_json())
        return Request(self.ACTION, payload, correlation_id)


@dataclass(frozen=True)
class ApplyBatch:
    """Operations applied together, always atomically: every one lands (in one transaction and the same
    output frame) or none does. ``atomic`` is on the wire for clients that send it; only ``true`` exists."""

    ACTION: ClassVar[str] = "applybatch"
    session_id: str
    operations: tuple[BatchOperation, ...]
    atomic: bool = True

    def __post_init__(self) -> None:
        if self.atomic is not True:
            raise LocalProtocolError("applybatch is always atomic; send operations that may fail alone as separate requests")

    def to_request(self, correlation_id: str | None = None) -> Request:
        operations = [{"action": op.ACTION, **op.operation()} for op in self.operations]
        return Request(
            self.ACTION, {"session_id": self.session_id, "operations": operations, "atomic": self.atomic}, correlation_id
        )


@dataclass(frozen=True)
class _PreviewAction:
    """Preview requests name one ``sink::preview`` node (PROTOCOL.md section 3, previews)."""

    ACTION: ClassVar[str] = ""
    session_id: str
    node_id: str

    def to_request(self, correlation_id: str | None = None) -> Request:
        return Request(self.ACTION, {"session_id": self.session_id, "node_id": self.node_id}, correlation_id)


_PreviewT = TypeVar("_PreviewT", bound=_PreviewAction)


@dataclass(frozen=True)
class GetPreview(_PreviewAction):
    """The node's latest JPEG thumbnail, answered with ``preview``."""

    ACTION: ClassVar[str] = "getpreview"


@dataclass(frozen=True)
class SubscribePreview(_PreviewAction):
    """From now on this connection gets ``nodepreviewupdated`` for the node (at most its ``max_fps``).

    For a compositor node the thumbnails come from an ephemeral preview of its output that lives as
    long as its subscriptions: ``max_width`` and ``max_fps`` choose its size and rate (None: the
    defaults below). A ``sink::preview`` node has them in its params instead.
    """

    ACTION: ClassVar[str] = "subscribepreview"
    max_width: int | None = None
    max_fps: float | None = None

    def to_request(self, correlation_id: str | None = None) -> Request:
        payload: dict[str, Any] = {"session_id": self.session_id, "node_id": self.node_id}
        if self.max_width is not None:
            payload["max_width"] = self.max_width
        if self.max_fps is not None:
            payload["max_fps"] = self.max_fps
        return Request(self.ACTION, payload, correlation_id)


# A compositor preview's size and rate: defaults, and the bounds a subscription may ask for.
COMPOSITOR_PREVIEW_WIDTH = 640
COMPOSITOR_PREVIEW_FPS = 15.0
COMPOSITOR_PREVIEW_WIDTH_RANGE = (16, 3840)
COMPOSITOR_PREVIEW_FPS_RANGE = (0.5, 60.0)


@dataclass(frozen=True)
class GetSchema:
    """Every node kind's params (``protocol.kind_schema``), answered with ``schema``."""

    ACTION: ClassVar[str] = "getschema"

    def to_request(self, correlation_id: str | None = None) -> Request:
        return Request(self.ACTION, {}, correlation_id)


PIPELINE_FORMATS = ("yaml", "toml")


@dataclass(frozen=True)
class ExportPipeline:
    """A running session as a pipeline file's text, answered with ``pipelineexported``."""

    ACTION: ClassVar[str] = "exportpipeline"
    session_id: str
    format: str = "yaml"

    def to_request(self, correlation_id: str | None = None) -> Request:
        return Request(self.ACTION, {"session_id": self.session_id, "format": self.format}, correlation_id)


@dataclass(frozen=True)
class ParsePipeline:
    """A pipeline file's text read and validated, answered with ``pipelineparsed`` (creates nothing)."""

    ACTION: ClassVar[str] = "parsepipeline"
    text: str
    format: str = "yaml"

    def to_request(self, correlation_id: str | None = None) -> Request:
        return Request(self.ACTION, {"text": self.text, "format": self.format}, correlation_id)


@dataclass(frozen=True)
class ListAssets:
    """The images in the daemon's asset directory (for image inputs and overlays), answered with ``assetslisted``."""

    ACTION: ClassVar[str] = "listassets"

    def to_request(self, correlation_id: str | None = None) -> Request:
        return Request(self.ACTION, {}, correlation_id)


@dataclass(frozen=True)
class ListExamples:
    """The example pipelines shipped with the daemon, answered with ``exampleslisted``."""

    ACTION: ClassVar[str] = "listexamples"

    def to_request(self, correlation_id: str | None = None) -> Request:
        return Request(self.ACTION, {}, correlation_id)


@dataclass(frozen=True)
class UnsubscribePreview(_PreviewAction):
    ACTION: ClassVar[str] = "unsubscribepreview"


Action = (
    GetPipeline
    | ListSessions
    | CreateSession
    | DestroySession
    | AddNode
    | RemoveNode
    | Connect
    | Disconnect
    | TuneNode
    | ApplyBatch
    | Take
    | GetPreview
    | SubscribePreview
    | UnsubscribePreview
    | GetSchema
    | ExportPipeline
    | ParsePipeline
    | ListExamples
    | ListAssets
)


def _session(reader: _Reader) -> str:
    return reader.string("session_id")


def _parse_get_pipeline(payload: Mapping[str, Any], base: str) -> GetPipeline:
    reader = _Reader("getpipeline", payload, base, ("session_id",))
    action = GetPipeline(_session(reader))
    reader.done()
    return action


def _parse_list_sessions(payload: Mapping[str, Any], base: str) -> ListSessions:
    _Reader("listsessions", payload, base, ()).done()
    return ListSessions()


def _parse_create_session(
    payload: Mapping[str, Any], base: str, *, context: node_params.ValidationContext = node_params.DAEMON
) -> CreateSession:
    reader = _Reader("createsession", payload, base, ("name", "pipeline"))
    # Without a name (StreamKit sends null) the session is named after its id; without a pipeline it is empty.
    name = reader.string("name", max_len=256) if payload.get("name") is not None else None
    pipeline = reader.mapping("pipeline", required=False)
    reader.done()
    pipeline_path = pointer.join(base, "pipeline")
    pipeline, images = _canonical_pipeline(pipeline, pipeline_path)
    try:
        normalized = node_params.validate_pipeline(pipeline, context=context)
    except RemoteProtocolError as exc:
        raise prefixed_error(exc, pipeline_path) from None
    return CreateSession(name, normalized, images)


def _canonical_pipeline(pipeline: Mapping[str, Any], path: str) -> tuple[Mapping[str, Any], tuple[streamkit.InlineImage, ...]]:
    """The pipeline with StreamKit's spellings of node params rewritten (protocol/streamkit.py)."""
    nodes = pipeline.get("nodes")
    if not isinstance(nodes, Mapping):
        return pipeline, ()
    rewritten: dict[Any, Any] = {}
    images: list[streamkit.InlineImage] = []
    for node_id, node in nodes.items():
        if isinstance(node, Mapping) and isinstance(node.get("params"), Mapping):
            canonical = streamkit.canonical_params(node["params"], path=pointer.join(path, "nodes", node_id, "params"))
            node = {**node, "params": canonical.params}
            images += canonical.images
        rewritten[node_id] = node
    return {**pipeline, "nodes": rewritten}, tuple(images)


def _parse_destroy_session(payload: Mapping[str, Any], base: str) -> DestroySession:
    reader = _Reader("destroysession", payload, base, ("session_id",))
    action = DestroySession(_session(reader))
    reader.done()
    return action


def _parse_add_node(
    payload: Mapping[str, Any],
    base: str,
    session_id: str | None = None,
    *,
    context: node_params.ValidationContext = node_params.DAEMON,
) -> AddNode:
    reader = _Reader("addnode", payload, base, ("session_id", "node_id", "kind", "params"))
    session = session_id if session_id is not None else _session(reader)
    node_id = reader.node_id()
    kind = reader.string("kind", max_len=64)
    # `params: null` (StreamKit's "no params") is the same as none.
    raw_params = reader.mapping("params", required=False) if payload.get("params") is not None else {}
    if kind and len(kind) <= 64 and kind not in node_params.KINDS:
        reader.errors.append(
            FieldError(pointer.join(base, "kind"), f"unknown node kind {kind!r}; known: {', '.join(node_params.NODE_KINDS)}")
        )
    reader.done()
    params_path = pointer.join(base, "params")
    canonical = streamkit.canonical_params(strip_private(raw_params), path=params_path)
    try:
        validated = node_params.validate(kind, canonical.params, context=context)
    except RemoteProtocolError as exc:
        raise prefixed_error(exc, params_path) from None
    return AddNode(session, node_id, kind, validated, canonical.images)


def _parse_remove_node(payload: Mapping[str, Any], base: str, session_id: str | None = None) -> RemoveNode:
    reader = _Reader("removenode", payload, base, ("session_id", "node_id"))
    session = session_id if session_id is not None else _session(reader)
    action = RemoveNode(session, reader.node_id())
    reader.done()
    return action


# StreamKit's connection modes (backpressure); compositord's inputs always take the latest frame, so both mean the same.
CONNECTION_MODES = ("reliable", "best_effort")


def _parse_link(cls: type[_LinkT], payload: Mapping[str, Any], base: str, session_id: str | None) -> _LinkT:
    reader = _Reader(cls.ACTION, payload, base, ("session_id", "from_node", "from_pin", "to_node", "to_pin", "mode"))
    if "mode" in payload and payload["mode"] not in CONNECTION_MODES:
        reader.errors.append(FieldError(pointer.join(base, "mode"), f"must be one of {', '.join(CONNECTION_MODES)}"))
    session = session_id if session_id is not None else _session(reader)
    action = cls(
        session,
        reader.node_id("from_node"),
        reader.string("from_pin", max_len=64),
        reader.node_id("to_node"),
        reader.string("to_pin", max_len=64),
    )
    reader.done()
    return action


def _parse_connect(payload: Mapping[str, Any], base: str, session_id: str | None = None) -> Connect:
    return _parse_link(Connect, payload, base, session_id)


def _parse_disconnect(payload: Mapping[str, Any], base: str, session_id: str | None = None) -> Disconnect:
    return _parse_link(Disconnect, payload, base, session_id)


def _parse_tune(payload: Mapping[str, Any], base: str, session_id: str | None = None, *, sync: bool = True) -> TuneNode:
    reader = _Reader("tunenode" if sync else "tunenodeasync", payload, base, ("session_id", "node_id", "message"))
    session = session_id if session_id is not None else _session(reader)
    node_id = reader.node_id()
    message = reader.mapping("message")
    message_path = pointer.join(base, "message")
    if isinstance(payload.get("message"), Mapping) and (len(message) != 1 or next(iter(message)) not in TUNE_VARIANTS):
        reader.errors.append(FieldError(message_path, "must hold exactly one of UpdateParams or PatchParams"))
    reader.done()
    variant, body = next(iter(message.items()))
    body_path = pointer.join(message_path, variant)
    if not isinstance(body, Mapping):
        raise _bad(body_path, "must be an object")
    stamp, stripped = take_stamp(body, path=body_path)
    canonical = streamkit.canonical_params(stripped, path=body_path)
    animate = parse_animate(body[ANIMATE_KEY], pointer.join(body_path, ANIMATE_KEY)) if ANIMATE_KEY in body else None
    transition = (
        node_params.validate_transition_patch(body[TRANSITION_ONCE_KEY], pointer.join(body_path, TRANSITION_ONCE_KEY))
        if TRANSITION_ONCE_KEY in body
        else None
    )
    return TuneNode(
        session, node_id, TUNE_VARIANTS[variant], canonical.params, stamp, sync, canonical.images, animate, transition
    )


def _parse_tune_async(payload: Mapping[str, Any], base: str) -> TuneNode:
    return _parse_tune(payload, base, sync=False)


_BATCHABLE: dict[str, Callable[[Mapping[str, Any], str, str], BatchOperation]] = {
    "addnode": _parse_add_node,
    "removenode": _parse_remove_node,
    "connect": _parse_connect,
    "disconnect": _parse_disconnect,
    "tunenode": _parse_tune,
}


def _parse_apply_batch(
    payload: Mapping[str, Any], base: str, *, context: node_params.ValidationContext = node_params.DAEMON
) -> ApplyBatch:
    reader = _Reader("applybatch", payload, base, ("session_id", "operations", "atomic"))
    session_id = _session(reader)
    raw = reader.array("operations")
    if reader.boolean("atomic", True) is not True:
        reader.errors.append(
            FieldError(
                pointer.join(base, "atomic"),
                "applybatch is always atomic (all operations or none); send operations that may fail alone as separate requests",
            )
        )
    reader.done()
    ops_path = pointer.join(base, "operations")
    if len(raw) > MAX_BATCH_OPERATIONS:
        raise _bad(ops_path, f"at most {MAX_BATCH_OPERATIONS} operations in one batch", ErrorCode.TOO_LARGE)
    operations: list[BatchOperation] = []
    for index, item in enumerate(raw):
        path = pointer.join(ops_path, index)
        if not isinstance(item, Mapping):
            raise _bad(path, "must be an object")
        name = item.get("action")
        parse = _BATCHABLE.get(name) if isinstance(name, str) else None
        if parse is None:
            raise _bad(pointer.join(path, "action"), f"must be one of {', '.join(_BATCHABLE)}", ErrorCode.UNKNOWN_ACTION)
        # The batch names the session once; an operation may repeat it, but only the same one.
        if "session_id" in item and item["session_id"] != session_id:
            raise _bad(pointer.join(path, "session_id"), "must be the batch's session_id (or absent)")
        fields = {key: value for key, value in item.items() if key not in ("action", "session_id")}
        if parse is _parse_add_node:
            operations.append(_parse_add_node(fields, path, session_id, context=context))
        else:
            operations.append(parse(fields, path, session_id))
    return ApplyBatch(session_id, tuple(operations))


def _parse_take(payload: Mapping[str, Any], base: str) -> Take:
    reader = _Reader("take", payload, base, ("session_id", "node_id", "transition", SENDER_KEY, REV_KEY))
    session_id = _session(reader)
    node_id = reader.node_id()
    transition = reader.mapping("transition", required=False) if "transition" in payload else None
    reader.done()
    stamp, _ = take_stamp({key: payload[key] for key in (SENDER_KEY, REV_KEY) if key in payload}, path=base)
    return Take(session_id, node_id, stamp, strip_private(transition) if transition is not None else None)


def _preview_parser(cls: type[_PreviewT]) -> Callable[[Mapping[str, Any], str], _PreviewT]:
    def parse(payload: Mapping[str, Any], base: str) -> _PreviewT:
        reader = _Reader(cls.ACTION, payload, base, ("session_id", "node_id"))
        action = cls(_session(reader), reader.node_id())
        reader.done()
        return action

    return parse


def _optional_number(reader: _Reader, key: str, bounds: tuple[float, float], *, integer: bool) -> Any:
    if key not in reader.payload:
        return None
    value = reader.payload[key]
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not float(value).is_integer()):
        reader.errors.append(FieldError(pointer.join(reader.base, key), f"must be {'a whole number' if integer else 'a number'}"))
        return None
    if not low <= value <= high:
        reader.errors.append(FieldError(pointer.join(reader.base, key), f"must be between {low:g} and {high:g}"))
        return None
    return int(value) if integer else float(value)


def _parse_subscribe_preview(payload: Mapping[str, Any], base: str) -> SubscribePreview:
    reader = _Reader(SubscribePreview.ACTION, payload, base, ("session_id", "node_id", "max_width", "max_fps"))
    session_id, node_id = _session(reader), reader.node_id()
    max_width = _optional_number(reader, "max_width", COMPOSITOR_PREVIEW_WIDTH_RANGE, integer=True)
    max_fps = _optional_number(reader, "max_fps", COMPOSITOR_PREVIEW_FPS_RANGE, integer=False)
    reader.done()
    return SubscribePreview(session_id, node_id, max_width, max_fps)


def _parse_get_schema(payload: Mapping[str, Any], base: str) -> GetSchema:
    _Reader(GetSchema.ACTION, payload, base, ()).done()
    return GetSchema()


def _pipeline_format(reader: _Reader) -> str:
    value = reader.payload.get("format", "yaml")
    if value not in PIPELINE_FORMATS:
        reader.errors.append(FieldError(pointer.join(reader.base, "format"), f"must be one of {', '.join(PIPELINE_FORMATS)}"))
    return str(value)


def _parse_export_pipeline(payload: Mapping[str, Any], base: str) -> ExportPipeline:
    reader = _Reader(ExportPipeline.ACTION, payload, base, ("session_id", "format"))
    action = ExportPipeline(_session(reader), _pipeline_format(reader))
    reader.done()
    return action


def _parse_parse_pipeline(payload: Mapping[str, Any], base: str) -> ParsePipeline:
    reader = _Reader(ParsePipeline.ACTION, payload, base, ("text", "format"))
    action = ParsePipeline(reader.string("text", max_len=MAX_TEXT_BYTES), _pipeline_format(reader))
    reader.done()
    return action


def _parse_list_examples(payload: Mapping[str, Any], base: str) -> ListExamples:
    _Reader(ListExamples.ACTION, payload, base, ()).done()
    return ListExamples()


def _parse_list_assets(payload: Mapping[str, Any], base: str) -> ListAssets:
    _Reader(ListAssets.ACTION, payload, base, ()).done()
    return ListAssets()


# Every parser takes the validation context; only those that validate node params use it.
_Parse = Callable[[Mapping[str, Any], str, node_params.ValidationContext], Action]


def _context_free(parse: Callable[[Mapping[str, Any], str], Action]) -> _Parse:
    return lambda payload, base, context: parse(payload, base)


_PARSERS: dict[str, _Parse] = {
    "getpipeline": _context_free(_parse_get_pipeline),
    "listsessions": _context_free(_parse_list_sessions),
    "createsession": lambda payload, base, context: _parse_create_session(payload, base, context=context),
    "destroysession": _context_free(_parse_destroy_session),
    "addnode": lambda payload, base, context: _parse_add_node(payload, base, context=context),
    "removenode": _context_free(_parse_remove_node),
    "connect": _context_free(_parse_connect),
    "disconnect": _context_free(_parse_disconnect),
    "tunenode": _context_free(_parse_tune),
    "tunenodeasync": _context_free(_parse_tune_async),
    # Older StreamKit clients' name of tunenodeasync (their server then kept the event from its sender;
    # compositord suppresses nothing: the sender's acks are what keep its edits from flickering back).
    "tunenodesilent": _context_free(_parse_tune_async),
    "applybatch": lambda payload, base, context: _parse_apply_batch(payload, base, context=context),
    "take": _context_free(_parse_take),
    "getpreview": _context_free(_preview_parser(GetPreview)),
    "subscribepreview": _context_free(_parse_subscribe_preview),
    "unsubscribepreview": _context_free(_preview_parser(UnsubscribePreview)),
    "getschema": _context_free(_parse_get_schema),
    "exportpipeline": _context_free(_parse_export_pipeline),
    "parsepipeline": _context_free(_parse_parse_pipeline),
    "listexamples": _context_free(_parse_list_examples),
    "listassets": _context_free(_parse_list_assets),
}
ACTIONS: tuple[str, ...] = tuple(_PARSERS)


def parse_action(request: Request, *, context: node_params.ValidationContext = node_params.DAEMON) -> Action:
    """The typed action of a request; :class:`RemoteProtocolError` with the path of the first bad field group.

    Codes: ``unknown_action``; ``bad_envelope`` for missing, unknown or
    wrongly typed fields and for a bad stamp; ``invalid_params`` for params or
    a pipeline that fail their schema or the ``context`` (the daemon's
    allowlist of stream destinations, say); ``too_large`` for an oversize batch.
    """
    parse = _PARSERS.get(request.action)
    if parse is None:
        raise _bad("/payload/action", f"unknown action {request.action!r}; known: {', '.join(ACTIONS)}", ErrorCode.UNKNOWN_ACTION)
    return parse(request.payload, "/payload", context)


def stamps_of(request: Request) -> list[tuple[str, Stamp]]:
    """Best effort: ``(node_id, stamp)`` of every well-formed stamp in a tune or batch request.

    For rule S6 when :func:`parse_action` refused the request: each stamp
    still counts as processed and is named in the error response.
    """
    payload = request.payload
    if request.action == Take.ACTION:
        try:
            stamp, _ = take_stamp({k: payload[k] for k in (SENDER_KEY, REV_KEY) if k in payload})
        except RemoteProtocolError:
            return []
        node_id = payload.get("node_id")
        return [(node_id, stamp)] if stamp is not None and isinstance(node_id, str) else []
    if request.action in ("tunenode", "tunenodeasync", "tunenodesilent"):
        candidates = [payload]
    elif request.action == "applybatch" and isinstance(payload.get("operations"), list):
        candidates = [op for op in payload["operations"] if isinstance(op, Mapping) and op.get("action") == "tunenode"]
    else:
        return []
    found: list[tuple[str, Stamp]] = []
    for candidate in candidates:
        node_id, message = candidate.get("node_id"), candidate.get("message")
        if not isinstance(node_id, str) or not isinstance(message, Mapping):
            continue
        for body in message.values():
            if isinstance(body, Mapping):
                try:
                    stamp, _ = take_stamp({k: body[k] for k in (SENDER_KEY, REV_KEY) if k in body})
                except RemoteProtocolError:
                    continue
                if stamp is not None:
                    found.append((node_id, stamp))
    return found


# --------------------------------------------------------------------------- responses


def success(correlation_id: str | None = None) -> Response:
    return Response("success", {}, correlation_id)


def error_response(
    error: RemoteProtocolError,
    correlation_id: str | None = None,
    stamp: Stamp | None = None,
    *,
    node_id: str | None = None,
    refused: Sequence[tuple[str, Stamp]] = (),
) -> Response:
    """The ``error`` response of ``error``; with ``stamp`` it carries ``_sender``/``_rev`` (rule S6).

    ``node_id`` names the node the stamp was for (a client's revs count per
    node); ``refused`` lists every ``(node_id, stamp)`` of a refused batch.
    """
    payload = {key: value for key, value in error.to_payload().items() if key != "action"}
    if stamp is not None:
        payload.update(stamp.to_json())
    if node_id is not None:
        payload["node_id"] = node_id
    if refused:
        payload["refused"] = [{"node_id": node, **each.to_json()} for node, each in refused]
    return Response("error", payload, correlation_id)


@dataclass(frozen=True)
class ErrorReply:
    """An ``error`` response as a client reads it."""

    code: str  # an ErrorCode value, or a code this version does not know
    message: str
    path: str | None = None
    errors: tuple[FieldError, ...] = ()
    stamp: Stamp | None = None
    node_id: str | None = None
    refused: tuple[tuple[str, Stamp], ...] = ()

    @classmethod
    def from_response(cls, response: Response) -> ErrorReply:
        if response.action != "error":
            raise LocalProtocolError(f"not an error response: {response.action!r}")
        payload = response.payload
        code, message, path = payload.get("code"), payload.get("message"), payload.get("path")
        if not isinstance(code, str):
            raise _bad("/payload/code", "must be a string")
        if not isinstance(message, str):
            raise _bad("/payload/message", "must be a string")
        if path is not None and not isinstance(path, str):
            raise _bad("/payload/path", "must be a string")
        node_id = payload.get("node_id")
        if node_id is not None and not isinstance(node_id, str):
            raise _bad("/payload/node_id", "must be a string")
        stamp, _ = take_stamp({k: payload[k] for k in (SENDER_KEY, REV_KEY) if k in payload}, path="/payload")
        errors = []
        raw_errors = payload.get("errors", [])
        if not isinstance(raw_errors, list):
            raise _bad("/payload/errors", "must be an array")
        for index, item in enumerate(raw_errors):
            if not (isinstance(item, Mapping) and isinstance(item.get("path"), str) and isinstance(item.get("message"), str)):
                raise _bad(pointer.join("/payload/errors", index), "must be an object with string path and message")
            errors.append(FieldError(item["path"], item["message"]))
        refused = []
        raw_refused = payload.get("refused", [])
        if not isinstance(raw_refused, list):
            raise _bad("/payload/refused", "must be an array")
        for index, item in enumerate(raw_refused):
            item_path = pointer.join("/payload/refused", index)
            if not isinstance(item, Mapping) or not isinstance(item.get("node_id"), str):
                raise _bad(item_path, "must be an object with a string node_id")
            each, _ = take_stamp({k: item[k] for k in (SENDER_KEY, REV_KEY) if k in item}, path=item_path)
            if each is None:
                raise _bad(item_path, "must carry _sender and _rev")
            refused.append((item["node_id"], each))
        return cls(code, message, path, tuple(errors), stamp, node_id, tuple(refused))

    def refused_stamps(self) -> list[tuple[str, Stamp]]:
        """Every ``(node_id, stamp)`` this error refuses: the ``refused`` list and the error's own stamp."""
        refused = list(self.refused)
        if self.stamp is not None and self.node_id is not None:
            refused.append((self.node_id, self.stamp))
        return refused


def pipeline_response(
    correlation_id: str | None,
    *,
    session_id: str,
    nodes: Mapping[str, Mapping[str, Any]],
    connections: Sequence[Mapping[str, Any]],
    pipeline: Mapping[str, Any] | None = None,
    state: str | None = None,
    engine: Mapping[str, Any] | None = None,
) -> Response:
    """``pipeline``: nodes ``{id: {"kind", "params", "view_data"?}}`` with durable params, and the connections;
    ``state`` is the session's (its engine's) state and ``engine`` its engine's health, when known.

    ``pipeline``: the same state as StreamKit's ``Pipeline`` object (``streamkit.pipeline_object``), for
    StreamKit clients, which read ``payload.pipeline``.
    """
    payload: dict[str, Any] = {
        "session_id": session_id,
        "protocol_version": PROTOCOL_VERSION,
        "nodes": {node_id: dict(node) for node_id, node in nodes.items()},
        "connections": [dict(c) for c in connections],
    }
    if pipeline is not None:
        payload["pipeline"] = dict(pipeline)
    if state is not None:
        payload["state"] = state
    if engine is not None:
        payload["engine"] = dict(engine)
    return Response("pipeline", payload, correlation_id)


def sessions_listed(correlation_id: str | None, sessions: Sequence[Mapping[str, Any]]) -> Response:
    """``sessionslisted``: ``sessions`` is a list of ``{"session_id", "name", ...}``."""
    return Response("sessionslisted", {"sessions": [dict(s) for s in sessions]}, correlation_id)


def session_created_response(correlation_id: str | None, session_id: str, name: str, created_at: float | None = None) -> Response:
    """``sessioncreated``; with ``created_at`` (wall clock) also as ISO 8601, as StreamKit clients read it."""
    return Response("sessioncreated", _session_created_payload(session_id, name, created_at), correlation_id)


def _session_created_payload(session_id: str, name: str, created_at: float | None) -> dict[str, Any]:
    payload: dict[str, Any] = {"session_id": session_id, "name": name}
    if created_at is not None:
        payload["created_at"] = streamkit.iso_timestamp(created_at)
    return payload


def session_destroyed_response(correlation_id: str | None, session_id: str) -> Response:
    return Response("sessiondestroyed", {"session_id": session_id}, correlation_id)


def batch_applied(correlation_id: str | None, session_id: str, applied: int) -> Response:
    """``batchapplied``: ``applied`` is the number of operations that landed (all of them); ``success``
    and ``errors`` as StreamKit clients read them (a refused batch is an ``error`` response instead)."""
    return Response("batchapplied", {"session_id": session_id, "applied": applied, "success": True, "errors": []}, correlation_id)


def schema_response(correlation_id: str | None, kinds: Mapping[str, Any]) -> Response:
    """``schema``: ``kinds`` maps every node kind to its params (``protocol.kind_schema``)."""
    return Response("schema", {"protocol_version": PROTOCOL_VERSION, "kinds": dict(kinds)}, correlation_id)


def pipeline_exported(correlation_id: str | None, session_id: str, format: str, text: str) -> Response:
    """``pipelineexported``: the session as the text of a pipeline file in ``format``."""
    return Response("pipelineexported", {"session_id": session_id, "format": format, "text": text}, correlation_id)


def pipeline_parsed(correlation_id: str | None, pipeline: Mapping[str, Any]) -> Response:
    """``pipelineparsed``: the validated, normalized pipeline (the ``createsession`` payload's shape)."""
    return Response("pipelineparsed", {"pipeline": dict(pipeline)}, correlation_id)


def examples_listed(correlation_id: str | None, examples: Sequence[Mapping[str, Any]]) -> Response:
    """``exampleslisted``: ``examples`` is a list of ``{"name", "file", "pipeline"}``."""
    return Response("exampleslisted", {"examples": [dict(e) for e in examples]}, correlation_id)


def assets_listed(correlation_id: str | None, assets: Sequence[str], truncated: bool) -> Response:
    """``assetslisted``: paths relative to the asset directory, sorted; ``truncated`` when there were more."""
    return Response("assetslisted", {"assets": list(assets), "truncated": truncated}, correlation_id)


def _preview_payload(
    session_id: str,
    node_id: str,
    *,
    jpeg: bytes,
    width: int,
    height: int,
    frame_number: int,
    media_time: float,
    timestamp: float,
    rendered_at: float | None = None,
) -> dict[str, Any]:
    if not isinstance(jpeg, (bytes, bytearray)) or not jpeg:
        raise LocalProtocolError("a preview needs the JPEG bytes")
    payload = {
        "session_id": session_id,
        "node_id": node_id,
        "content_type": PREVIEW_CONTENT_TYPE,
        "width": width,
        "height": height,
        "data": base64.b64encode(bytes(jpeg)).decode("ascii"),
        "frame_number": frame_number,
        "media_time": media_time,
        "timestamp": timestamp,
    }
    if rendered_at is not None:
        # A compositor's preview also says when its frame was rendered (wall clock): a client can tell its latency.
        payload["rendered_at"] = rendered_at
    return payload


def preview_response(correlation_id: str | None, session_id: str, node_id: str, **image: Any) -> Response:
    """``preview``: ``content_type`` ``image/jpeg``, ``width``, ``height``, ``data`` (base64), the
    compositor's ``frame_number``, ``media_time`` (the frame's slot, seconds) and ``timestamp`` (encoded at, wall clock)."""
    return Response("preview", _preview_payload(session_id, node_id, **image), correlation_id)


# --------------------------------------------------------------------------- events


def _stamped_state(state: Mapping[str, Any], stamp: Stamp | None, acks: Mapping[str, int], seq: int) -> dict[str, Any]:
    private = [key for key in state if isinstance(key, str) and key.startswith("_")]
    if private:
        raise LocalProtocolError(f"state must not carry private keys already: {private}")
    data = dict(state)
    if stamp is not None:
        data.update(stamp.to_json())
    data[ACKS_KEY] = dict(acks)
    data[SEQ_KEY] = seq
    return data


def node_params_changed(
    session_id: str, node_id: str, params: Mapping[str, Any], stamp: Stamp | None, acks: Mapping[str, int], seq: int
) -> Event:
    """``nodeparamschanged``: durable params plus ``_sender``/``_rev`` (when stamped), ``_acks``, ``_seq``."""
    return Event(
        "nodeparamschanged",
        {"session_id": session_id, "node_id": node_id, "params": _stamped_state(params, stamp, acks, seq)},
    )


def node_view_data_updated(
    session_id: str,
    node_id: str,
    data: Mapping[str, Any],
    stamp: Stamp | None,
    acks: Mapping[str, int],
    seq: int,
    timestamp: float,
) -> Event:
    """``nodeviewdataupdated``: the resolved layout plus the stamp of its cause (if any), ``_acks``, ``_seq``."""
    return Event(
        "nodeviewdataupdated",
        {"session_id": session_id, "node_id": node_id, "data": _stamped_state(data, stamp, acks, seq), "timestamp": timestamp},
    )


def node_added(session_id: str, node_id: str, kind: str, params: Mapping[str, Any]) -> Event:
    return Event("nodeadded", {"session_id": session_id, "node_id": node_id, "kind": kind, "params": dict(params)})


def node_removed(session_id: str, node_id: str) -> Event:
    return Event("noderemoved", {"session_id": session_id, "node_id": node_id})


def _connection_payload(session_id: str, from_node: str, from_pin: str, to_node: str, to_pin: str) -> dict[str, Any]:
    return {"session_id": session_id, "from_node": from_node, "from_pin": from_pin, "to_node": to_node, "to_pin": to_pin}


def connection_added(session_id: str, from_node: str, from_pin: str, to_node: str, to_pin: str) -> Event:
    return Event("connectionadded", _connection_payload(session_id, from_node, from_pin, to_node, to_pin))


def connection_removed(session_id: str, from_node: str, from_pin: str, to_node: str, to_pin: str) -> Event:
    return Event("connectionremoved", _connection_payload(session_id, from_node, from_pin, to_node, to_pin))


def session_created_event(session_id: str, name: str, created_at: float | None = None) -> Event:
    return Event("sessioncreated", _session_created_payload(session_id, name, created_at))


def session_destroyed_event(session_id: str) -> Event:
    return Event("sessiondestroyed", {"session_id": session_id})


def node_stats_updated(session_id: str, node_id: str, stats: Mapping[str, Any]) -> Event:
    """``nodestatsupdated``: frames rendered, dropped, late, render ms percentiles (at most once a second; a compositor
    that mixes sound: 10 times a second, with its meters in ``audio``)."""
    return Event("nodestatsupdated", {"session_id": session_id, "node_id": node_id, "stats": dict(stats)})


LIVE_CONDITIONS = ("connecting", "live")
"""What a live input (a capture device, a network stream) is doing when it has no error: waiting for its
peer or device, or receiving frames. Other nodes are ``"ok"`` when they have no error."""


def node_state_changed(session_id: str, node_id: str, error: str | None, condition: str | None = None) -> Event:
    """``nodestatechanged``: ``state`` is ``"ok"``, ``"connecting"``, ``"live"`` or ``{"error": message}`` (a
    missing file, undecodable data, a receiver gone...); the same value as the node's ``state`` in ``getpipeline``."""
    if error is not None and not (isinstance(error, str) and error):
        raise LocalProtocolError(f"node_state_changed: error must be a non-empty string or None, got {error!r}")
    if condition is not None and condition not in LIVE_CONDITIONS:
        raise LocalProtocolError(
            f"node_state_changed: condition must be one of {', '.join(LIVE_CONDITIONS)} or None, got {condition!r}"
        )
    return Event("nodestatechanged", {"session_id": session_id, "node_id": node_id, "state": node_state(error, condition)})


def node_state(error: str | None, condition: str | None = None) -> str | dict[str, str]:
    """A node's ``state`` as clients see it: ``{"error": message}``, else its live condition
    (``"connecting"``, ``"live"``), else ``"ok"``."""
    if error is not None:
        return {"error": error}
    return condition if condition in LIVE_CONDITIONS else "ok"


def node_preview_updated(session_id: str, node_id: str, **image: Any) -> Event:
    """``nodepreviewupdated``: the fields of a ``preview`` response; sent only to connections that subscribed."""
    return Event("nodepreviewupdated", _preview_payload(session_id, node_id, **image))


def error_event(error: RemoteProtocolError) -> Event:
    """An ``error`` event on one connection: a refused pushed frame (section 6) has no request to answer."""
    return Event("error", {key: value for key, value in error.to_payload().items() if key != "action"})
