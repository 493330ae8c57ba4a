"""JSON pointers (RFC 6901): the one way this project names a place in a document.

Error reports, the client's pending-edit table and merge-patch flattening all
use these helpers, so a key containing ``/`` or ``~`` is escaped the same way
everywhere.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from compositord.protocol.errors import LocalProtocolError

_MISSING = object()


def escape(token: str | int) -> str:
    text = token if isinstance(token, str) else str(token)
    if "~" in text or "/" in text:
        return text.replace("~", "~0").replace("/", "~1")
    return text


def unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def join(base: str, *tokens: str | int) -> str:
    """``join("/layers", "in_1", "opacity") == "/layers/in_1/opacity"``."""
    for token in tokens:
        base += "/" + escape(token)
    return base


def split(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if pointer[0] != "/":
        raise LocalProtocolError(f"not a JSON pointer: {pointer!r}")
    tokens = pointer[1:].split("/")
    # Only a pointer with a "~" has escapes; the others (nearly all) need no pass over their tokens.
    return [unescape(t) for t in tokens] if "~" in pointer else tokens


def resolve(document: Any, pointer: str, default: Any = _MISSING) -> Any:
    """The value at ``pointer``; ``default`` (or KeyError) when any step is missing."""
    node = document
    for token in split(pointer):
        if is_object(node) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        elif default is _MISSING:
            raise KeyError(pointer)
        else:
            return default
    return node


def with_value(document: Any, pointer: str, value: Any) -> Any:
    """A copy of ``document`` with ``value`` at ``pointer``; missing objects on the way are created.

    Only the containers on the path are copied; everything else is shared.
    """
    return _with_value(document, split(pointer), 0, value)


def _with_value(document: Any, tokens: list[str], index: int, value: Any) -> Any:
    if index == len(tokens):
        return value
    head = tokens[index]
    if isinstance(document, list) and head.isdigit() and int(head) < len(document):
        copy = list(document)
        copy[int(head)] = _with_value(document[int(head)], tokens, index + 1, value)
        return copy
    copy_map = dict(document) if is_object(document) else {}
    copy_map[head] = _with_value(copy_map.get(head), tokens, index + 1, value)
    return copy_map


def is_object(value: Any) -> bool:
    """A JSON object (a mapping)."""
    # The exact types first: an ABC's isinstance check costs a Python call, and documents are plain dicts,
    # lists and scalars.
    kind = type(value)
    return kind is dict or (kind not in _NOT_OBJECTS and isinstance(value, Mapping))


_NOT_OBJECTS = frozenset({str, int, float, bool, type(None), list})


def leaves(document: Any, base: str = "") -> Iterator[tuple[str, Any]]:
    """Every non-object value with its pointer; an empty object is a leaf of its own.

    A merge patch flattened this way names each value it sets (``None`` meaning delete).
    """
    if is_object(document) and document:
        for key, child in document.items():
            yield from leaves(child, join(base, key))
    else:
        yield base, document
