"""``sink::file``: H.264 / VP9 / AV1 into MP4, WebM or MKV (PyAV).

The container comes from the ``container`` param, else from the path's
extension (``params.validate`` has checked that one of them names a container
that can hold the codec). The path is relative to the output directory
(``daemon.sandbox.resolve_output``: no way out of it). PyAV writes the file in place and ``finish``
writes the trailer, so the file plays once the sink was closed (stop, node
removal, new params, SIGTERM). MP4 uses ``+faststart`` (index at the front).
"""

from __future__ import annotations

import os

from compositord.daemon.sinks.base import SinkError
from compositord.daemon.sinks.encoding import EncoderSink

# container param -> FFmpeg muxer
MUXERS = {"mp4": "mp4", "webm": "webm", "mkv": "matroska"}


def container_of(params: dict) -> str:
    container = params.get("container")
    if container:
        return str(container)
    return os.path.splitext(str(params["path"]))[1].lstrip(".").lower()


class FileSink(EncoderSink):
    kind = "sink::file"

    def where(self) -> str | None:
        return str(self.params["path"])

    def target(self) -> tuple[str, str, dict[str, str]]:
        path = str(self.params["path"])
        container = container_of(self.params)
        if container not in MUXERS:
            raise SinkError(f"no container for {path!r}: set container to mp4, webm or mkv")
        real = self.output_target(path).path
        if not os.access(real.parent, os.W_OK):
            raise SinkError(f"cannot write {path!r}: its directory in the output directory is not writable")
        # flush_packets: a packet the muxer writes reaches the file at once, not in 32 KiB chunks, so a
        # full disk is noticed at the frame that hits it (MP4 writes each packet; Matroska a cluster at a time).
        options = {"flush_packets": "1"}
        if container == "mp4":
            options["movflags"] = "+faststart"
        return str(real), MUXERS[container], options
