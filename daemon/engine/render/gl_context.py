"""The one place a GL context is made: headless EGL, OpenGL 3.3 core or newer.

Call :func:`create_context` in the thread that will use the context (the
render thread) and nowhere else; a current context is thread state.

Device selection, for machines with several GPUs: the ``device_index``
argument (the daemon's setting), else the environment variable
``COMPOSITORD_EGL_DEVICE``, else the EGL default device. The index is passed
to glcontext's EGL backend (``eglQueryDevicesEXT`` order).

gc_mode is ``"context_gc"`` on purpose: GL objects are released explicitly,
and one that is dropped without ``release()`` is queued and freed by
``ctx.gc()`` on the render thread (the renderer calls it every frame), never by
Python's collector on whatever thread happens to run it ("auto") and never
leaked silently (None).
"""

from __future__ import annotations

import ctypes.util
import os

import moderngl

REQUIRED_GL_VERSION = 330
DEVICE_ENV_VAR = "COMPOSITORD_EGL_DEVICE"
INSTALL_HINT = "on Debian/Ubuntu: apt-get install libegl1 libgl1 libegl-mesa0 libgl1-mesa-dri"


class GLContextError(RuntimeError):
    """No usable OpenGL 3.3+ context; the message says what is missing and how to install it."""


def _device_from_env() -> int | None:
    raw = os.environ.get(DEVICE_ENV_VAR, "").strip()
    if not raw:
        return None
    try:
        index = int(raw)
    except ValueError:
        raise GLContextError(f"{DEVICE_ENV_VAR}={raw!r}: must be an EGL device index (0, 1, ...)") from None
    if index < 0:
        raise GLContextError(f"{DEVICE_ENV_VAR}={raw!r}: must be >= 0")
    return index


def _missing_libraries() -> list[str]:
    missing = []
    if ctypes.util.find_library("EGL") is None:
        missing.append("libEGL.so.1")
    if ctypes.util.find_library("GL") is None:
        missing.append("libGL.so.1")
    return missing


def create_context(device_index: int | None = None) -> moderngl.Context:
    """A standalone EGL context on ``device_index`` (or ``$COMPOSITORD_EGL_DEVICE``), GL >= 3.3."""
    if device_index is None:
        device_index = _device_from_env()
    elif device_index < 0:
        raise GLContextError(f"EGL device index must be >= 0, got {device_index}")
    missing = _missing_libraries()
    if missing:
        raise GLContextError(
            f"no OpenGL context: {' and '.join(missing)} not found (EGL with Mesa or a GPU driver is needed; {INSTALL_HINT})"
        )
    settings: dict[str, int] = {}
    if device_index is not None:
        settings["device_index"] = device_index
    try:
        ctx = moderngl.create_standalone_context(backend="egl", require=REQUIRED_GL_VERSION, **settings)  # type: ignore[arg-type]  # moderngl's stub types each **settings value as a dict
    except Exception as exc:  # glcontext raises plain Exception subclasses with the EGL step that failed
        device = f" on EGL device {device_index}" if device_index is not None else ""
        raise GLContextError(
            f"no OpenGL {REQUIRED_GL_VERSION // 100}.{REQUIRED_GL_VERSION % 100 // 10} core context{device}: {exc}. "
            f"Mesa's EGL driver (llvmpipe works without a GPU) is needed: {INSTALL_HINT}"
        ) from exc
    if ctx.version_code < REQUIRED_GL_VERSION:
        version = ctx.version_code
        ctx.release()
        raise GLContextError(f"OpenGL {version // 100}.{version % 100 // 10} found, 3.3 or newer needed ({INSTALL_HINT})")
    ctx.gc_mode = "context_gc"
    return ctx


def collect_garbage(ctx: moderngl.Context) -> int:
    """Free GL objects that were dropped without ``release()``; call on the render thread.

    Like ``ctx.gc()``, but tolerant of what moderngl 5.13 queues for objects
    that *were* released (their ``InvalidObject`` has no ``release``), on
    which ``ctx.gc()`` raises. Returns how many live objects it freed.
    """
    freed = 0
    queue = ctx.objects
    while queue:
        release = getattr(queue.popleft(), "release", None)
        if release is not None:
            release()
            freed += 1
    return freed
