"""The daemon's data model: sessions, nodes, connections and their params.

Plain data, no I/O. The store keeps these records durable; the session logic
reads them; the render loop gets copies. Records held by the store's mirror
are never mutated after they are published: every change makes new records
(copy-on-write), so a reference is always a consistent snapshot.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from compositord.protocol import pointer
from compositord.protocol.errors import LocalProtocolError


@dataclass
class NodeRecord:
    """One node. ``params`` are durable params: sanitized (no ``_`` keys) and
    normalized by ``protocol.params.validate``, without defaults filled in.
    ``seq`` is the params sequence number: +1 per applied change."""

    node_id: str
    kind: str
    params: dict[str, Any]
    seq: int = 0


@dataclass(frozen=True)
class ConnectionRecord:
    from_node: str
    from_pin: str
    to_node: str
    to_pin: str

    def to_json(self) -> dict[str, str]:
        return {"from_node": self.from_node, "from_pin": self.from_pin, "to_node": self.to_node, "to_pin": self.to_pin}


@dataclass
class SessionRecord:
    session_id: str
    name: str
    nodes: dict[str, NodeRecord] = field(default_factory=dict)
    connections: list[ConnectionRecord] = field(default_factory=list)

    def to_pipeline(self) -> dict[str, Any]:
        """The pipeline-file shape (what ``createsession`` takes and ``check-config`` reads)."""
        return {
            "nodes": {node_id: {"kind": node.kind, "params": copy.deepcopy(node.params)} for node_id, node in self.nodes.items()},
            "connections": [conn.to_json() for conn in self.connections],
        }

    @classmethod
    def from_pipeline(cls, session_id: str, name: str, doc: Mapping[str, Any]) -> SessionRecord:
        """Records from a pipeline document that ``protocol.params.validate_pipeline`` already accepted."""
        nodes = {
            node_id: NodeRecord(node_id=node_id, kind=spec["kind"], params=copy.deepcopy(dict(spec.get("params") or {})))
            for node_id, spec in doc.get("nodes", {}).items()
        }
        connections = [
            ConnectionRecord(c["from_node"], c["from_pin"], c["to_node"], c["to_pin"]) for c in doc.get("connections", [])
        ]
        return cls(session_id=session_id, name=name, nodes=nodes, connections=connections)

    def copy(self) -> SessionRecord:
        """A deep copy another thread may keep (the render loop takes these)."""
        return copy.deepcopy(self)

    def inputs_of(self, node_id: str) -> dict[str, ConnectionRecord]:
        """The connections into ``node_id``, keyed by its input pin."""
        return {conn.to_pin: conn for conn in self.connections if conn.to_node == node_id}


def private_key_paths(value: Any, path: str = "") -> Iterator[str]:
    """JSON pointers of every key that starts with ``_``, at any depth."""
    # Every stored change is walked: a pointer is joined only for a key found, not for every key on the way.
    for tokens in _private_key_tokens(value, ()):
        yield pointer.join(path, *tokens)


def _private_key_tokens(value: Any, prefix: tuple[str | int, ...]) -> Iterator[tuple[str | int, ...]]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and key.startswith("_"):
                yield (*prefix, key)
            if isinstance(item, (Mapping, list, tuple)):
                yield from _private_key_tokens(item, (*prefix, str(key)))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            if isinstance(item, (Mapping, list, tuple)):
                yield from _private_key_tokens(item, (*prefix, index))


def refuse_private_keys(value: Any, where: str) -> None:
    """Defence in depth: the session logic strips ``_`` keys before anything is
    stored; a record that still has one is a bug on this side."""
    for path in private_key_paths(value):
        raise LocalProtocolError(f"{where}: key {path!r} starts with '_'; only sanitized params may be stored")
