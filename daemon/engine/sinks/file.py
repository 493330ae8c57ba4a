"""``sink::file``: H.264 / VP9 / AV1 into MP4, WebM or MKV (PyAV).

The container comes from the ``container`` param, else from the path's
extension (``params.validate`` has checked that one of them names a container
that can hold the codec). The path is relative to the output directory
(``daemon.sandbox.resolve_output``: no way out of it). PyAV writes the file in place and ``finish``
writes the trailer, so the file plays once the sink was closed (stop, node
removal, new params, SIGTERM). MP4 uses ``+faststart`` (index at the front). A FIFO at the path is refused
(``sink::y4m`` writes pipes without blocking; FFmpeg's open of a FIFO blocks
until a reader comes, holding the GIL).

A recording is never overwritten by default (``if_exists: new_name``): new
params start a new sink while the old one still writes its trailer, and a
daemon restart starts the node again, so a file already at the path gets the
next free ``name-N.ext`` instead. The name is claimed with ``O_EXCL`` before
the muxer opens it, so two sinks never share a file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from compositord.daemon.engine.sinks.base import SinkError
from compositord.daemon.engine.sinks.encoding import EncoderSink

# container param -> FFmpeg muxer
MUXERS = {"mp4": "mp4", "webm": "webm", "mkv": "matroska"}


def container_of(params: dict) -> str:
    container = params.get("container")
    if container:
        return str(container)
    return os.path.splitext(str(params["path"]))[1].lstrip(".").lower()


_MAX_NEW_NAMES = 10_000


def _claim_free_name(path: Path) -> Path:
    """``path``, or the first ``stem-N.ext`` that does not exist yet, created empty so that it is ours."""
    for number in range(_MAX_NEW_NAMES):
        candidate = path if number == 0 else path.with_name(f"{path.stem}-{number}{path.suffix}")
        try:
            os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except FileExistsError:
            continue
        except OSError as exc:
            raise SinkError(f"cannot create {candidate.name!r} in the output directory: {exc.strerror or exc}") from None
        return candidate
    raise SinkError(f"{path.name!r} and {_MAX_NEW_NAMES - 1} numbered names after it exist already: choose another path")


class FileSink(EncoderSink):
    kind = "sink::file"
    path_written: str | None = None  # the path (relative to the output directory) this recording went to

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "path_written": self.path_written}

    def where(self) -> str | None:
        return str(self.params["path"])

    def target(self) -> tuple[str, str, dict[str, str]]:
        path = str(self.params["path"])
        container = container_of(self.params)
        if container not in MUXERS:
            raise SinkError(f"no container for {path!r}: set container to mp4, webm or mkv")
        found = self.output_target(path)
        if found.is_fifo:
            # FFmpeg would open it for writing, which blocks until a reader comes, with the GIL held: every
            # thread of the engine would stop. A recording is a file; raw frames for a pipe are sink::y4m's.
            raise SinkError(f"{path!r} is a FIFO: sink::file records into regular files; use sink::y4m for a pipe")
        real = found.path
        if not os.access(real.parent, os.W_OK):
            raise SinkError(f"cannot write {path!r}: its directory in the output directory is not writable")
        if self.params.get("if_exists", "new_name") == "new_name":
            real = _claim_free_name(real)
        self.path_written = os.path.join(os.path.dirname(path), real.name)
        # flush_packets: a packet the muxer writes reaches the file at once, not in 32 KiB chunks, so a
        # full disk is noticed at the frame that hits it (MP4 writes each packet; Matroska a cluster at a time).
        options = {"flush_packets": "1"}
        if container == "mp4":
            options["movflags"] = "+faststart"
        return str(real), MUXERS[container], options
