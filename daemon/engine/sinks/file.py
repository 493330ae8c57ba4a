"""``sink::file``: H.264 / VP9 / AV1 into MP4, WebM or MKV (PyAV).

The container comes from the ``container`` param, else from the path's
extension (``params.validate`` has checked that one of them names a container
that can hold the codec). The path is relative to the output directory. It is
opened here, not by FFmpeg: through ``daemon.sandbox.open_output_directory``
(the directory chain opened without following links, so one swapped in after
the check is refused, not followed) and with ``O_NOFOLLOW``; PyAV then writes
to ``/proc/self/fd/N``, the very file opened (FFmpeg opens the output by name,
again to move the MP4 index to the front, and that name always means this
file). ``finish`` writes the trailer, so the file plays once the sink was
closed (stop, node removal, new params, SIGTERM). MP4 uses ``+faststart``.

A recording is never overwritten by default (``if_exists: new_name``): new
params start a new sink while the old one still writes its trailer, and a
daemon restart starts the node again, so a file already at the path gets the
next free ``name-N.ext`` instead. The name is claimed with ``O_EXCL`` before
the muxer opens it, so two sinks never share a file.

The sink stops with a node error before free space on the disk it writes to
falls under ``min_free_disk_bytes`` (``sinks/disk_floor.py``).
"""

from __future__ import annotations

import os
from typing import Any

from compositord.daemon.engine.sandbox import OutputDirectory, SandboxError, check_opened
from compositord.daemon.engine.sinks.base import SinkError
from compositord.daemon.engine.sinks.disk_floor import DiskFloor
from compositord.daemon.engine.sinks.encoding import EncoderSink

# container param -> FFmpeg muxer
MUXERS = {"mp4": "mp4", "webm": "webm", "mkv": "matroska"}


def container_of(params: dict) -> str:
    container = params.get("container")
    if container:
        return str(container)
    return os.path.splitext(str(params["path"]))[1].lstrip(".").lower()


_MAX_NEW_NAMES = 10_000
# The output is opened read-write: FFmpeg reads the file back to move the MP4 index to the front.
_CREATE = os.O_RDWR | os.O_CREAT | os.O_NONBLOCK


def _numbered(name: str, number: int) -> str:
    stem, dot, suffix = name.rpartition(".")
    return name if number == 0 else (f"{stem}-{number}.{suffix}" if dot and stem else f"{name}-{number}")


def _claim_free_name(directory: OutputDirectory) -> tuple[str, int]:
    """The output's name, or the first ``stem-N.ext`` free in its directory, created with ``O_EXCL`` so it is ours."""
    for number in range(_MAX_NEW_NAMES):
        candidate = _numbered(directory.name, number)
        try:
            return candidate, os.open(candidate, _CREATE | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=directory.fd)
        except FileExistsError:
            continue
    raise SinkError(f"{directory.name!r} and {_MAX_NEW_NAMES - 1} numbered names after it exist already: choose another path")


class FileSink(EncoderSink):
    kind = "sink::file"
    path_written: str | None = None  # the path (relative to the output directory) this recording went to

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fd: int | None = None
        self._floor: DiskFloor | None = None

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "path_written": self.path_written}

    def where(self) -> str | None:
        return str(self.params["path"])

    def target(self) -> tuple[str, str, dict[str, str]]:
        path = str(self.params["path"])
        container = container_of(self.params)
        if container not in MUXERS:
            raise SinkError(f"no container for {path!r}: set container to mp4, webm or mkv")
        with self.output_directory(path) as directory:
            DiskFloor(directory.fd, self.min_free_disk_bytes).check_now()  # before a file is even created
            try:
                if self.params.get("if_exists", "new_name") == "new_name":
                    name, fd = _claim_free_name(directory)
                else:
                    name, fd = directory.name, directory.open(_CREATE, 0o644)  # truncated once checked, below
            except PermissionError:
                raise SinkError(f"cannot write {path!r}: its directory in the output directory is not writable") from None
            except OSError as exc:
                raise SinkError(f"cannot open {path!r}: {exc.strerror or exc} (it may have been replaced by a link)") from None
            try:
                if check_opened(fd, directory):
                    raise SinkError(f"{path!r} is a FIFO: an encoded file needs a regular file (sink::y4m writes into FIFOs)")
            except SandboxError as exc:
                os.close(fd)
                raise SinkError(str(exc)) from None
            except SinkError:
                os.close(fd)
                raise
        os.ftruncate(fd, 0)  # only now: a hard link swapped in since the check is refused, not emptied
        self._fd = fd
        self._floor = DiskFloor(fd, self.min_free_disk_bytes)  # the directory's fd closes with the with block
        self.path_written = os.path.join(os.path.dirname(path), name)
        # flush_packets: a packet the muxer writes reaches the file at once, not in 32 KiB chunks, so a
        # full disk is noticed at the frame that hits it (MP4 writes each packet; Matroska a cluster at a time).
        options = {"flush_packets": "1"}
        if container == "mp4":
            options["movflags"] = "+faststart"
        return f"/proc/self/fd/{fd}", MUXERS[container], options

    def wrote(self, count: int) -> None:
        if self._floor is not None:
            self._floor.wrote(count)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            fd, self._fd = self._fd, None
            if fd is not None:
                os.close(fd)
