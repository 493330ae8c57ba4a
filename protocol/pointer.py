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
    return str(token).replace("~", "~0").replace("/", "~1")


def unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def join(base: str, *tokens: str | int) -> str:
    """``join("/layers", "in_1", "opacity") == "/layers/in_1/opacity"``."""
    return base + "".join("/" + escape(t) for t in tokens)


def split(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise LocalProtocolError(f"not a JSON pointer: {pointer!r}")
    return [unescape(t) for t in pointer[1:].split("/")]


def resolve(document: Any, pointer: str, default: Any = _MISSING) -> Any:
    """The value at ``pointer``; ``default`` (or KeyError) when any step is missing."""
    node = document
    for token in split(pointer):
        if isinstance(node, Mapping) and token in node:
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
    tokens = split(pointer)
    if not tokens:
        return value
    head, rest = tokens[0], join("", *tokens[1:])
    if isinstance(document, list) and head.isdigit() and int(head) < len(document):
        copy = list(document)
        copy[int(head)] = with_value(document[int(head)], rest, value)
        return copy
    copy_map = dict(document) if isinstance(document, Mapping) else {}
    copy_map[head] = with_value(copy_map.get(head), rest, value)
    return copy_map


def leaves(document: Any, base: str = "") -> Iterator[tuple[str, Any]]:
    """Every non-object value with its pointer; an empty object is a leaf of its own.

    A merge patch flattened this way names each value it sets (``None`` meaning delete).
    """
    if isinstance(document, Mapping) and document:
        for key, child in document.items():
            yield from leaves(child, join(base, key))
    else:
        yield base, document
