"""The one gate between a client-supplied path and the file system.

Clients name files *inside* a directory the operator chose: assets (images,
fonts, clips) inside the asset directory, sink outputs inside the output
directory. A client with control access must not reach anything else the
daemon's user can read or write (``~/.bashrc``, ``/dev/sda``, ``/proc``).

Refused, with a :class:`SandboxError` that names the field, the value and the
reason:

- syntax (the same rules ``protocol.params.RelativePath`` applies at
  validation, checked again here for params that never passed it, such as
  rows stored by an older version): empty, absolute, any ``..`` component,
  NUL, backslash;
- symbolic links whose target leaves the directory (the real path must stay
  under the real directory);
- anything under /proc, /sys or /dev, even when linked from inside, and
  device files and sockets anywhere;
- for inputs: anything that is not a regular file; for outputs: directories,
  and a regular file with other hard links (its inode may be a file outside).

An output may be a FIFO the operator made inside the directory
(``mkfifo <output_dir>/out.y4m``).

The checks look at names; what is opened afterwards must be what they
checked, even if something in the directory changes in between (a link
swapped in for a directory or for the file, by another local user or
program). So outputs are opened with :func:`open_output_directory`: it
checks, then opens the real directory chain one component at a time with
``O_NOFOLLOW`` from the real output directory, and the sink opens its file
relative to that directory, again with ``O_NOFOLLOW``; :func:`check_opened`
then looks at what was opened (a regular file with one link, or a FIFO). A
link swapped in after the check makes the open fail instead of being
followed.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

_FORBIDDEN_ROOTS = (Path("/proc"), Path("/sys"), Path("/dev"))


class SandboxError(ValueError):
    """A client-named path cannot be used; the message says which and why."""


def relative_parts(value: object, *, field: str, place: str) -> tuple[str, ...]:
    """The components of a syntactically safe relative path, or :class:`SandboxError`."""
    if not isinstance(value, str) or not value:
        raise SandboxError(f"{field} {value!r}: must be a non-empty relative path")
    if "\x00" in value or "\\" in value:
        raise SandboxError(f"{field} {value!r}: NUL and backslash are not allowed")
    relative = PurePosixPath(value)
    if relative.is_absolute():
        raise SandboxError(f"{field} {value!r}: absolute paths are refused; name a file inside the {place}")
    if ".." in relative.parts:
        raise SandboxError(f"{field} {value!r}: '..' is refused; name a file inside the {place}")
    return relative.parts


def _refuse_outside(real: Path, root: Path, value: str, *, field: str, place: str) -> None:
    if not real.is_relative_to(root):
        raise SandboxError(f"{field} {value!r}: a link leads out of the {place}")
    if any(real.is_relative_to(forbidden) for forbidden in _FORBIDDEN_ROOTS):
        raise SandboxError(f"{field} {value!r}: device and kernel files are refused")


def resolve_input(
    root_dir: str | os.PathLike[str] | None, value: str, *, field: str = "asset_path", place: str = "asset directory"
) -> Path:
    """The real path of an existing regular file ``value`` inside ``root_dir``."""
    if root_dir is None:
        raise SandboxError(f"{field} {value!r}: no {place} is configured")
    parts = relative_parts(value, field=field, place=place)
    root = Path(root_dir).resolve(strict=False)
    try:
        real = root.joinpath(*parts).resolve(strict=True)
    except (FileNotFoundError, NotADirectoryError, RuntimeError) as exc:
        raise SandboxError(f"{field} {value!r}: no such file in the {place}") from exc
    _refuse_outside(real, root, value, field=field, place=place)
    if not stat.S_ISREG(real.stat().st_mode):
        raise SandboxError(f"{field} {value!r}: not a regular file")
    return real


@dataclass(frozen=True)
class OutputTarget:
    """Where an output goes: ``path`` is real (no links left); ``is_fifo`` when the operator made a FIFO there."""

    path: Path
    is_fifo: bool


def resolve_output(
    root_dir: str | os.PathLike[str] | None, value: str, *, field: str = "path", place: str = "output directory"
) -> OutputTarget:
    """Where to write ``value`` inside ``root_dir`` (made on demand; its subdirectories must exist)."""
    if root_dir is None:
        raise SandboxError(f"{field} {value!r}: no {place} is configured")
    parts = relative_parts(value, field=field, place=place)
    root_path = Path(root_dir)
    try:
        root_path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SandboxError(f"{field} {value!r}: cannot create the {place} {str(root_path)!r}: {exc.strerror or exc}") from exc
    root = root_path.resolve(strict=True)
    candidate = root.joinpath(*parts)
    try:
        real_parent = candidate.parent.resolve(strict=True)
    except (FileNotFoundError, NotADirectoryError, RuntimeError) as exc:
        raise SandboxError(f"{field} {value!r}: no such directory in the {place}") from exc
    _refuse_outside(real_parent, root, value, field=field, place=place)
    if not real_parent.is_dir():
        raise SandboxError(f"{field} {value!r}: no such directory in the {place}")
    try:
        real = (real_parent / candidate.name).resolve(strict=True)
    except FileNotFoundError:
        # A new file (or a dangling link: resolved as far as it goes, so it must still land inside).
        real = (real_parent / candidate.name).resolve(strict=False)
        _refuse_outside(real, root, value, field=field, place=place)
        return OutputTarget(real, is_fifo=False)
    except (NotADirectoryError, RuntimeError) as exc:
        raise SandboxError(f"{field} {value!r}: cannot be resolved ({exc})") from exc
    _refuse_outside(real, root, value, field=field, place=place)
    status = real.stat()
    if stat.S_ISFIFO(status.st_mode):
        return OutputTarget(real, is_fifo=True)
    if stat.S_ISDIR(status.st_mode):
        raise SandboxError(f"{field} {value!r}: is a directory")
    if not stat.S_ISREG(status.st_mode):
        raise SandboxError(f"{field} {value!r}: device files and sockets are refused")
    if status.st_nlink > 1:
        raise SandboxError(f"{field} {value!r}: the file has other hard links; remove it first")
    return OutputTarget(real, is_fifo=False)


@dataclass
class OutputDirectory:
    """The directory an output goes into, open without following links, and the output's name in it."""

    fd: int
    name: str
    target: OutputTarget  # what the check found (real path, FIFO or not)
    value: str
    field: str

    def open(self, flags: int, mode: int = 0o644) -> int:
        """``os.open`` of the output relative to the directory; never follows a link at the last component."""
        return os.open(self.name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=self.fd)

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def __enter__(self) -> OutputDirectory:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_output_directory(
    root_dir: str | os.PathLike[str] | None, value: str, *, field: str = "path", place: str = "output directory"
) -> OutputDirectory:
    """Check ``value`` (:func:`resolve_output`), then open the directory that holds it, link by link refused.

    The walk starts at the real output directory and follows the real path the
    check found; a component that is a link by now (swapped in since the check)
    makes it fail with :class:`SandboxError`. Close the result (or use it in a
    ``with``) once the output is open.
    """
    target = resolve_output(root_dir, value, field=field, place=place)
    assert root_dir is not None  # resolve_output refused None
    root = Path(root_dir).resolve(strict=True)
    parts = target.path.parent.relative_to(root).parts
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise SandboxError(f"{field} {value!r}: cannot open the {place}: {exc.strerror or exc}") from None
    for part in parts:
        try:
            child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        except OSError as exc:
            os.close(fd)
            raise SandboxError(
                f"{field} {value!r}: its directory changed while it was being opened ({exc.strerror or exc})"
            ) from None
        os.close(fd)
        fd = child
    return OutputDirectory(fd, target.path.name, target, value, field)


def check_opened(fd: int, directory: OutputDirectory) -> bool:
    """What ``fd`` (opened through ``directory``) is: True for a FIFO, False for a regular file with one link.

    Anything else (a directory, a device, a file that gained a hard link to somewhere else since the
    check) is :class:`SandboxError`; the caller closes ``fd`` then.
    """
    status = os.fstat(fd)
    if stat.S_ISFIFO(status.st_mode):
        return True
    value, field = directory.value, directory.field
    if not stat.S_ISREG(status.st_mode):
        raise SandboxError(f"{field} {value!r}: not a regular file or FIFO")
    if status.st_nlink > 1:
        raise SandboxError(f"{field} {value!r}: the file has other hard links; remove it first")
    return False
