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
(``mkfifo <output_dir>/out.y4m``). The checks run just before the file is
opened; a remote client cannot create links, so what they vouch for holds
until the operator changes the directory.
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
