"""The one map from a node kind to what implements it in the engine: a source factory or a sink.

The params schema of every kind lives in ``protocol/params.py``; this module
says which code runs a node of that kind. The render loop makes sources
through it, the sink set makes sinks through it, ``compositord render`` draws
the sources that need no running pipeline. The compositor is the engine
itself, not an entry. docs/INTERNALS.md "Adding a node kind" lists what a new
kind touches.

Sink modules are imported when a node of their kind is made: ``sink::window``
pulls in glfw, the encoders pull in codecs, and a pipeline without them
should not pay for that.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compositord.daemon.engine.api import LOOPBACK_HOSTS, PreviewImage
from compositord.daemon.engine.sinks.base import ErrorLatch, Sink
from compositord.daemon.engine.sources.audio_push import AudioPushSource
from compositord.daemon.engine.sources.base import SourceFactory
from compositord.daemon.engine.sources.capture import CaptureSource
from compositord.daemon.engine.sources.colorbars import ColorbarsSource
from compositord.daemon.engine.sources.image import ImageSource
from compositord.daemon.engine.sources.push import PushSource
from compositord.daemon.engine.sources.stream_in import StreamInSource
from compositord.daemon.engine.sources.tone import ToneSource
from compositord.daemon.engine.sources.video_file import VideoFileSource


@dataclass(frozen=True)
class SinkContext:
    """What a sink factory may need besides the node's id, params, error latch and predecessor."""

    output_dir: Path | None  # None: every file sink refuses its path
    on_preview: Callable[[str, PreviewImage], None] | None  # (node id, thumbnail), from the sink's own thread
    min_free_disk_bytes: int | None = None  # file outputs stop before free space falls under it; None: the sinks' default
    listen_hosts: tuple[str, ...] = LOOPBACK_HOSTS  # what a sink::stream listen URL may bind


# factory(node_id, params with defaults, latch, the sink it replaces or None, context) -> a sink not started yet.
SinkFactory = Callable[[str, Mapping[str, Any], ErrorLatch, Sink | None, SinkContext], Sink]


@dataclass(frozen=True)
class SourceKind:
    make: SourceFactory
    # frame(0.0) is ready as soon as the source is made, with no pipeline running (no decoder, no
    # client): `compositord render` can draw it.
    standalone: bool


@dataclass(frozen=True)
class SinkKind:
    make: SinkFactory


def _file(node_id: str, params: Mapping[str, Any], latch: ErrorLatch, predecessor: Sink | None, context: SinkContext) -> Sink:
    from compositord.daemon.engine.sinks.file import FileSink

    return FileSink(
        node_id, params, latch, predecessor, output_dir=context.output_dir, min_free_disk_bytes=context.min_free_disk_bytes
    )


def _y4m(node_id: str, params: Mapping[str, Any], latch: ErrorLatch, predecessor: Sink | None, context: SinkContext) -> Sink:
    from compositord.daemon.engine.sinks.y4m import Y4MSink

    return Y4MSink(
        node_id, params, latch, predecessor, output_dir=context.output_dir, min_free_disk_bytes=context.min_free_disk_bytes
    )


def _stream(node_id: str, params: Mapping[str, Any], latch: ErrorLatch, predecessor: Sink | None, context: SinkContext) -> Sink:
    from compositord.daemon.engine.sinks.stream import StreamOutput

    return StreamOutput(node_id, params, latch, predecessor, listen_hosts=context.listen_hosts)


def _window(node_id: str, params: Mapping[str, Any], latch: ErrorLatch, predecessor: Sink | None, context: SinkContext) -> Sink:
    from compositord.daemon.engine.sinks.window import WindowSink

    return WindowSink(node_id, params, latch, predecessor)


def _preview(node_id: str, params: Mapping[str, Any], latch: ErrorLatch, predecessor: Sink | None, context: SinkContext) -> Sink:
    from compositord.daemon.engine.sinks.preview import PreviewSink

    return PreviewSink(node_id, params, latch, predecessor, on_image=context.on_preview)


IMPLEMENTATIONS: dict[str, SourceKind | SinkKind] = {
    "video::colorbars": SourceKind(lambda params, context: ColorbarsSource(params), standalone=True),
    "video::image": SourceKind(lambda params, context: ImageSource(params, context.asset_dir), standalone=True),
    "video::file": SourceKind(lambda params, context: VideoFileSource(params, context.asset_dir), standalone=False),
    "video::push": SourceKind(
        lambda params, context: PushSource(params, context.push_inlets.slot(context.node_id)), standalone=False
    ),
    "audio::push": SourceKind(
        lambda params, context: AudioPushSource(params, context.push_inlets.audio(context.node_id)), standalone=False
    ),
    "video::capture": SourceKind(lambda params, context: CaptureSource(params), standalone=False),
    "av::stream_in": SourceKind(lambda params, context: StreamInSource(params), standalone=False),
    "audio::tone": SourceKind(lambda params, context: ToneSource(params), standalone=False),
    "sink::file": SinkKind(_file),
    "sink::y4m": SinkKind(_y4m),
    "sink::stream": SinkKind(_stream),
    "sink::window": SinkKind(_window),
    "sink::preview": SinkKind(_preview),
}


def source(kind: str) -> SourceKind | None:
    """The source implementation of ``kind``; None when ``kind`` is not a source."""
    found = IMPLEMENTATIONS.get(kind)
    return found if isinstance(found, SourceKind) else None


def sink(kind: str) -> SinkKind | None:
    """The sink implementation of ``kind``; None when ``kind`` is not a sink."""
    found = IMPLEMENTATIONS.get(kind)
    return found if isinstance(found, SinkKind) else None
