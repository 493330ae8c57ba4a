"""Pushed audio (PROTOCOL.md section 6.1): a binary PCM message goes to every ``audio::push`` node, in any
running session, whose id hashes to the header's ``node_id_hash``, once its format matches the node's params
and the connection's audio budget has room for it.

A refused message (bad header or byte count, unknown node, a node of another kind, a rate or channel
count the node does not take, over the connection's bytes-per-second budget) is an ``error`` event on
the sending connection only, with the header field as its path; it is dropped and nothing changes.
"""

from __future__ import annotations

import functools

from compositord.daemon.control.connection import Connection
from compositord.daemon.engine import api
from compositord.daemon.sessions.live import LiveSessions
from compositord.protocol import envelope, frames, pcm
from compositord.protocol import params as node_params
from compositord.protocol.errors import ErrorCode, RemoteProtocolError
from compositord.protocol.params import AUDIO_PUSH_KIND

# Audio comes in small messages (10-20 ms each), so each node id is hashed often.
_node_id_hash = functools.lru_cache(maxsize=4096)(frames.node_id_hash)


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
        """The audio::push nodes a message goes to: the node id may be used in several sessions (each gets it)."""
        targets: list[tuple[api.Engine, str]] = []
        for session_id, record in self._live.store.sessions().items():
            live = self._live.get(session_id)
            if live is None:
                continue
            for node_id, node in record.nodes.items():
                if _node_id_hash(node_id) != header.node_id_hash:
                    continue
                where = f"node {node_id!r} of session {session_id!r}"
                if node.kind != AUDIO_PUSH_KIND:
                    raise RemoteProtocolError(
                        ErrorCode.INVALID_PARAMS,
                        f"audio header /node_id_hash: {where} is a {node.kind}; only {AUDIO_PUSH_KIND} nodes take pushed audio",
                        "/node_id_hash",
                    )
                expected = node_params.with_defaults(AUDIO_PUSH_KIND, node.params)
                for field_name, got, unit in (("sample_rate", header.sample_rate, " Hz"), ("channels", header.channels, "")):
                    wanted = expected[field_name]
                    if wanted is not None and wanted != got:
                        raise RemoteProtocolError(
                            ErrorCode.INVALID_PARAMS,
                            f"audio header /{field_name}: {where} takes {field_name} {wanted}{unit}, got {got}{unit}",
                            f"/{field_name}",
                        )
                targets.append((live.engine, node_id))
        if not targets:
            raise RemoteProtocolError(
                ErrorCode.NOT_FOUND,
                f"audio header /node_id_hash: no node of a running session has the id hash {header.node_id_hash:#018x}",
                "/node_id_hash",
            )
        return targets
