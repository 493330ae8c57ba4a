"""Images a client sent inline (StreamKit's ``data_base64``), stored in the asset directory by content.

``protocol.streamkit.canonical_params`` replaces an inline image by the asset
path ``inline/<sha256>.<ext>``, so durable params keep a path as for any
other image, and hands the bytes here. :meth:`InlineImages.store` writes each
image under that name before the params that name it are stored or reach an
engine; the engine then reads it through the asset sandbox like any asset.

Writing keeps to the sandbox's rules from this side: the ``inline`` folder
must be a real directory inside the asset directory (a link there, or
anything else with that name, is refused), files are opened relative to it
without following links, written to a temporary name and renamed into place,
so a reader never sees half an image. Content addressing makes a second
store of the same image a no-op. Bounded: at most ``max_files`` images in the
folder (a client cannot fill the disk with distinct images; the operator
deletes old ones); each write runs in a worker thread and is given up after
``timeout`` seconds (a hung disk refuses the change instead of holding the session).

The base64 of the images seen since start (bounded by ``cache_bytes``, least
recently used first out) is kept for :meth:`base64_of`: StreamKit clients of
the ``data_base64`` era get the image back in that field.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import logging
import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

import trio

from compositord.protocol.errors import ErrorCode, RemoteProtocolError
from compositord.protocol.streamkit import INLINE_ASSET_PATH, INLINE_IMAGE_DIR, InlineImage

log = logging.getLogger(__name__)

MAX_INLINE_FILES = 4096
WRITE_TIMEOUT_S = 5.0
CACHE_BYTES = 32 * 1024 * 1024


class InlineImages:
    def __init__(
        self,
        asset_dir: Path | None,
        *,
        max_files: int = MAX_INLINE_FILES,
        timeout: float = WRITE_TIMEOUT_S,
        cache_bytes: int = CACHE_BYTES,
    ) -> None:
        self._asset_dir = asset_dir
        self._max_files = max_files
        self._timeout = timeout
        self._cache_bytes = cache_bytes
        # Writes of two sessions may overlap in their worker threads: one at a time (the count, the temporary names).
        self._write_lock = threading.Lock()
        self._stored: set[str] = set()  # asset paths known to be on disk (written or found)
        self._count: int | None = None  # files in the folder, counted at the first write
        self._cache: OrderedDict[str, str] = OrderedDict()
        self._cached_bytes = 0

    async def store(self, images: Iterable[InlineImage], path: str) -> None:
        """Write every image not on disk yet; ``path`` (the params' JSON pointer) names a refusal."""
        missing = []
        for image in images:
            self._remember(image)
            if image.asset_path not in self._stored:
                missing.append(image)
        if not missing:
            return
        if self._asset_dir is None:
            raise RemoteProtocolError(
                ErrorCode.INVALID_PARAMS, f"{path}: this daemon has no asset directory for inline images", path
            )
        with trio.move_on_after(self._timeout) as scope:
            await trio.to_thread.run_sync(self._write_all, missing, path, abandon_on_cancel=True)
        if scope.cancelled_caught:
            raise RemoteProtocolError(ErrorCode.INTERNAL, f"{path}: storing an inline image took over {self._timeout:g} s", path)

    def base64_of(self, asset_path: str) -> str | None:
        """The base64 of an inline image seen since start, or None."""
        encoded = self._cache.get(asset_path)
        if encoded is not None:
            self._cache.move_to_end(asset_path)
        return encoded

    # ------------------------------------------------------------------ internals

    def _remember(self, image: InlineImage) -> None:
        if image.asset_path in self._cache:
            self._cache.move_to_end(image.asset_path)
            return
        encoded = base64.b64encode(image.data).decode("ascii")
        self._cache[image.asset_path] = encoded
        self._cached_bytes += len(encoded)
        while self._cached_bytes > self._cache_bytes and len(self._cache) > 1:
            _, dropped = self._cache.popitem(last=False)
            self._cached_bytes -= len(dropped)

    def _write_all(self, images: list[InlineImage], path: str) -> None:
        """Worker thread: the folder checked or made, then each image written (or found already there)."""
        assert self._asset_dir is not None
        with self._write_lock:
            self._write_all_locked(images, path)

    def _write_all_locked(self, images: list[InlineImage], path: str) -> None:
        try:
            folder = self._open_folder()
        except OSError as exc:
            raise RemoteProtocolError(
                ErrorCode.INTERNAL, f"{path}: cannot use the inline image folder: {exc.strerror or exc}", path
            ) from None
        try:
            if self._count is None:
                self._count = sum(1 for name in os.listdir(folder) if INLINE_ASSET_PATH.fullmatch(f"{INLINE_IMAGE_DIR}/{name}"))
            for image in images:
                self._write_one(folder, image, path)
        finally:
            os.close(folder)

    def _open_folder(self) -> int:
        assert self._asset_dir is not None
        self._asset_dir.mkdir(parents=True, exist_ok=True)
        root = os.open(self._asset_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            with contextlib.suppress(FileExistsError):
                os.mkdir(INLINE_IMAGE_DIR, 0o755, dir_fd=root)
            # O_NOFOLLOW: a link named `inline` (out of the asset directory, or anywhere) is refused (ELOOP).
            return os.open(INLINE_IMAGE_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=root)
        finally:
            os.close(root)

    def _write_one(self, folder: int, image: InlineImage, path: str) -> None:
        name = image.asset_path.rsplit("/", 1)[1]
        try:
            found = os.stat(name, dir_fd=folder, follow_symlinks=False)
        except FileNotFoundError:
            found = None
        if found is not None:
            if not stat.S_ISREG(found.st_mode) or found.st_size != len(image.data):
                raise RemoteProtocolError(
                    ErrorCode.INTERNAL, f"{path}: {image.asset_path} in the asset directory is not the image it names", path
                )
            self._stored.add(image.asset_path)
            return
        assert self._count is not None
        if self._count >= self._max_files:
            raise RemoteProtocolError(
                ErrorCode.TOO_LARGE,
                f"{path}: the asset directory holds {self._count} inline images, the most it keeps; remove unused ones",
                path,
            )
        temporary = f".{name}.{os.getpid()}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        try:
            descriptor = os.open(temporary, flags, 0o644, dir_fd=folder)
            try:
                with os.fdopen(descriptor, "wb", closefd=False) as out:
                    out.write(image.data)
                    out.flush()
                    os.fsync(descriptor)
            finally:
                os.close(descriptor)
            os.rename(temporary, name, src_dir_fd=folder, dst_dir_fd=folder)
        except OSError as exc:
            try:
                os.unlink(temporary, dir_fd=folder)
            except OSError as cleanup:
                if cleanup.errno != errno.ENOENT:
                    log.warning("cannot remove %s: %s", temporary, cleanup)
            raise RemoteProtocolError(
                ErrorCode.INTERNAL, f"{path}: cannot store {image.asset_path}: {exc.strerror or exc}", path
            ) from None
        self._count += 1
        self._stored.add(image.asset_path)
