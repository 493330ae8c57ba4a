"""Pushed audio (PROTOCOL.md section 6.1): a binary PCM message goes to every ``audio::push`` node, in any
running session, whose id hashes to the header's ``node_id_hash``, once its format matches the node's params
and the connection's audio budget has room for it.

A refused message (bad header or byte count, unknown node, a node of another kind, a rate or channel
count the node does not take, over the connection's bytes-per-second budget) is an ``error`` event on
the sending connection only, with the header field as its path; it is dropped and nothing changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from compositord.daemon.control.connection import Connection
from compositord.daemon.engine import api
from compositord.daemon.sessions.live import LiveSessions
from compositord.daemon.sessions.push_targets import push_targets
from compositord.protocol import envelope, pcm
from compositord.protocol.errors import ErrorCode, RemoteProtocolError
from compositord.protocol.params import AUDIO_PUSH_KIND


class PushedAudioRouter:
    def __init__(self, live: LiveSessions) -> None:
        self._live = live

    def handle(self, connection: Connection, data: bytes) -> None:
        try:
            header = pcm.parse_audio_header(data)
            targets = self._targets(header)
            size = len(data)
            if not connection.audio_budget.try_take(size):
                raise RemoteProtocolError(
                    ErrorCode.RATE_LIMITED,
                    f"audio header /: this connection pushes more than {connection.audio_budget.rate:g} bytes of audio a"
                    " second (max_audio_bytes_per_second); message dropped",
                    "",
                )
        except RemoteProtocolError as error:
            connection.send(envelope.serialize(envelope.error_event(error)))
            return
        samples = memoryview(data)[pcm.HEADER_SIZE :]
        for engine, node_id in targets:
            engine.push_audio(
                api.PushedAudio(node_id, header.sample_format, header.channels, header.sample_rate, header.pts_us, samples)
            )

    def _targets(self, header: pcm.AudioHeader) -> list[tuple[api.Engine, str]]:
        def mismatch(expected: Mapping[str, Any], where: str) -> tuple[str, str] | None:
            for field_name, got, unit in (("sample_rate", header.sample_rate, " Hz"), ("channels", header.channels, "")):
                wanted = expected[field_name]
                if wanted is not None and wanted != got:
                    return field_name, f"{where} takes {field_name} {wanted}{unit}, got {got}{unit}"
            return None

        return push_targets(
            self._live, header.node_id_hash, kind=AUDIO_PUSH_KIND, header="audio header", takes="pushed audio", mismatch=mismatch
        )
