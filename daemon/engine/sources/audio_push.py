"""An ``audio::push`` node: PCM a client sends as binary WebSocket messages (PROTOCOL.md section 6.1).

The control side checks each message (``protocol.pcm``) and hands it to the
engine as an ``api.PushedAudio``; the render loop queues it in the node's
inlet (``audio.push.PushedAudioInlet``, kept in the loop's ``PushInlets``),
whose own thread converts it to the bus format and writes it into the
node's AudioBuffer. This source is the render thread's side: it has no
picture (``frame`` is None, so its compositor layer draws nothing), its
``audio`` is that buffer, read live by the mixer, and its stats are the
inlet's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from compositord.daemon.engine.audio.buffer import AudioBuffer
from compositord.daemon.engine.audio.push import DEFAULT_LATENCY_MS, PushedAudioInlet
from compositord.daemon.engine.render.frames import SourceFrame


class AudioPushSource:
    def __init__(self, params: Mapping[str, Any], inlet: PushedAudioInlet | None) -> None:
        if inlet is None:
            raise RuntimeError("the render loop has ended")
        self._inlet = inlet
        self.configure(params)

    def configure(self, params: Mapping[str, Any]) -> None:
        self._inlet.configure(int(params.get("latency_ms", DEFAULT_LATENCY_MS)))

    def frame(self, t: float = 0.0) -> SourceFrame | None:
        return None  # sound only

    @property
    def audio(self) -> AudioBuffer:
        return self._inlet.buffer

    def stats(self) -> dict[str, Any]:
        return self._inlet.stats()
