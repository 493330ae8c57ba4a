"""Which nodes a pushed binary message goes to: every node, in any running session, whose id hashes to the
header's ``node_id_hash`` (the header names its node by that hash only, PROTOCOL.md section 6), once the node
is of the kind that takes the message and agrees with what the header says.

Shared by pushed frames and pushed audio; each says what its node kind must agree with (``mismatch``).
Every refusal is a ``RemoteProtocolError`` with the header field as its path.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from compositord.daemon.engine import api
from compositord.daemon.sessions.live import LiveSessions
from compositord.protocol import frames
from compositord.protocol import params as node_params
from compositord.protocol.errors import ErrorCode, RemoteProtocolError

# Nodes are named by a hash of their id; hashing every node id for every message (30 frames a second, audio
# in 10-20 ms messages) adds up.
_node_id_hash = functools.lru_cache(maxsize=4096)(frames.node_id_hash)

# (the node's params with defaults, "node 'x' of session 'y'") -> None, or (header field, why) when they disagree
Mismatch = Callable[[Mapping[str, Any], str], tuple[str, str] | None]


def push_targets(
    live_sessions: LiveSessions, node_id_hash: int, *, kind: str, header: str, takes: str, mismatch: Mismatch
) -> list[tuple[api.Engine, str]]:
    """The ``(engine, node id)`` pairs a message for ``node_id_hash`` goes to; ``header`` names the header in
    refusals ("frame header"), ``takes`` what the kind takes ("pushed frames")."""
    targets: list[tuple[api.Engine, str]] = []
    for session_id, record in live_sessions.store.sessions().items():
        live = live_sessions.get(session_id)
        if live is None:
            continue
        for node_id, node in record.nodes.items():
            if _node_id_hash(node_id) != node_id_hash:
                continue
            where = f"node {node_id!r} of session {session_id!r}"
            if node.kind != kind:
                raise RemoteProtocolError(
                    ErrorCode.INVALID_PARAMS,
                    f"{header} /node_id_hash: {where} is a {node.kind}; only {kind} nodes take {takes}",
                    "/node_id_hash",
                )
            disagreement = mismatch(node_params.with_defaults(kind, node.params), where)
            if disagreement is not None:
                field_name, why = disagreement
                raise RemoteProtocolError(ErrorCode.INVALID_PARAMS, f"{header} /{field_name}: {why}", f"/{field_name}")
            targets.append((live.engine, node_id))
    if not targets:
        raise RemoteProtocolError(
            ErrorCode.NOT_FOUND,
            f"{header} /node_id_hash: no node of a running session has the id hash {node_id_hash:#018x}",
            "/node_id_hash",
        )
    return targets
