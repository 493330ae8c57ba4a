"""Pushed frames (PROTOCOL.md section 6): a binary message goes to every ``video::push`` node, in any
running session, whose id hashes to the header's ``node_id_hash``, once its shape matches the node's params.

A refused frame (bad header or byte count, unknown node, a node of another kind, a shape other than
the node's params) is an ``error`` event on the sending connection only, with the header field as its
path; it is dropped and the node keeps its last good frame.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from compositord.daemon.control.connection import Connection
from compositord.daemon.engine import api
from compositord.daemon.sessions.live import LiveSessions
from compositord.daemon.sessions.push_targets import push_targets
from compositord.protocol import envelope, frames
from compositord.protocol.errors import RemoteProtocolError
from compositord.protocol.params import PUSH_KIND


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
        def mismatch(expected: Mapping[str, Any], where: str) -> tuple[str, str] | None:
            for field_name, got in (("width", header.width), ("height", header.height), ("pixel_format", header.pixel_format)):
                if expected[field_name] != got:
                    return field_name, (
                        f"{where} takes {expected['width']}x{expected['height']} {expected['pixel_format']} frames,"
                        f" got {header.width}x{header.height} {header.pixel_format}"
                    )
            return None

        return push_targets(
            self._live, header.node_id_hash, kind=PUSH_KIND, header="frame header", takes="pushed frames", mismatch=mismatch
        )
