"""Pushed frames (PROTOCOL.md section 6): a binary message goes to every ``video::push`` node, in any
running session, whose id hashes to the header's ``node_id_hash``, once its shape matches the node's params.

A refused frame (bad header or byte count, unknown node, a node of another kind, a shape other than
the node's params) is an ``error`` event on the sending connection only, with the header field as its
path; it is dropped and the node keeps its last good frame.
"""

from __future__ import annotations

import functools

from compositord.daemon.control.connection import Connection
from compositord.daemon.engine import api
from compositord.daemon.sessions.live import LiveSessions
from compositord.protocol import envelope, frames
from compositord.protocol import params as node_params
from compositord.protocol.errors import ErrorCode, RemoteProtocolError
from compositord.protocol.params import PUSH_KIND

# Pushed frames name their node by a hash of its id; hashing every node id at 30 frames a second adds up.
_node_id_hash = functools.lru_cache(maxsize=4096)(frames.node_id_hash)


class PushedFrames:
    def __init__(self, live: LiveSessions) -> None:
        self._live = live

    def handle(self, connection: Connection, data: bytes) -> None:
        try:
            header = frames.parse_frame_header(data)
            targets = self._targets(header)
        except RemoteProtocolError as error:
            connection.send(envelope.serialize(envelope.error_event(error)))
            return
        pixels = memoryview(data)[frames.HEADER_SIZE :]  # no copy on the way to the engines
        for engine, node_id in targets:
            engine.push_frame(api.PushedFrame(node_id, header.width, header.height, header.pixel_format, header.pts_us, pixels))

    def _targets(self, header: frames.FrameHeader) -> list[tuple[api.Engine, str]]:
        """The push nodes a frame goes to: the node id may be used in several sessions (each gets it)."""
        targets: list[tuple[api.Engine, str]] = []
        for session_id, record in self._live.store.sessions().items():
            live = self._live.get(session_id)
            if live is None:
                continue
            for node_id, node in record.nodes.items():
                if _node_id_hash(node_id) != header.node_id_hash:
                    continue
                where = f"node {node_id!r} of session {session_id!r}"
                if node.kind != PUSH_KIND:
                    raise RemoteProtocolError(
                        ErrorCode.INVALID_PARAMS,
                        f"frame header /node_id_hash: {where} is a {node.kind}; only {PUSH_KIND} nodes take pushed frames",
                        "/node_id_hash",
                    )
                expected = node_params.with_defaults(PUSH_KIND, node.params)
                for field_name, got in (
                    ("width", header.width),
                    ("height", header.height),
                    ("pixel_format", header.pixel_format),
                ):
                    if expected[field_name] != got:
                        raise RemoteProtocolError(
                            ErrorCode.INVALID_PARAMS,
                            f"frame header /{field_name}: {where} takes {expected['width']}x{expected['height']} "
                            f"{expected['pixel_format']} frames, got {header.width}x{header.height} {header.pixel_format}",
                            f"/{field_name}",
                        )
                targets.append((live.engine, node_id))
        if not targets:
            raise RemoteProtocolError(
                ErrorCode.NOT_FOUND,
                f"frame header /node_id_hash: no node of a running session has the id hash {header.node_id_hash:#018x}",
                "/node_id_hash",
            )
        return targets
