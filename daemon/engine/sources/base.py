"""What every source is: the interface the render loop drives, and what its factory gets."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from compositord.daemon.engine.render.frames import SourceFrame
from compositord.daemon.engine.sources.push import PushInlets


class FrameSource(Protocol):
    """A compositor input made on the render thread: configure on new params, frame(t) every frame
    (None: nothing to show yet, e.g. before a decoder's first frame).

    Optional members, looked up with getattr: ``error`` (str or None, read every frame: the node's
    error state, e.g. a file that cannot be decoded), ``stats()`` (a dict sent as the node's
    ``nodestatsupdated``), ``close()`` (the node left the pipeline or the loop ends: stop threads),
    ``audio`` (an ``audio.buffer.AudioBuffer`` the source fills with bus-format sound, or None: a source
    without sound; the mixer reads it on the render thread, ``audio_time(t)`` when the source also has
    that method (a timed source: the play-clock time of the sound that goes with ``frame(t)``)),
    ``produce_audio(start_sample, count)`` (a source whose sound is made on the render loop's clock, as
    ``audio::tone``'s: called on the render thread just before each read of ``audio``, it writes the
    samples ``[start_sample, start_sample + count)`` of that clock into ``audio``).
    """

    def configure(self, params: Mapping[str, Any]) -> None: ...

    def frame(self, t: float = 0.0) -> SourceFrame | None: ...


@dataclass(frozen=True)
class SourceContext:
    """What a source factory may need besides the node's params."""

    node_id: str
    asset_dir: Path
    push_inlets: PushInlets  # where pushed frames wait for the render thread (video::push)


# Called on the render thread with the node's params (defaults filled in).
SourceFactory = Callable[[Mapping[str, Any], SourceContext], FrameSource]
