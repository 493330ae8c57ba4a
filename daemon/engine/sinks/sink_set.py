"""The sinks of one pipeline, owned by its render loop.

The render thread calls ``sync`` whenever the session's nodes, connections or
params changed (at a frame start), ``deliver`` after each compositor frame and
``close_all`` when the loop ends. None of these block on a sink: a sink that
must go (removed, new params) is told to finish and its worker thread does
the flushing; a replacement waits for it on its own thread. Only
``close_all`` waits (bounded by its timeout), so that on shutdown every file
is finished before the process exits.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from compositord.daemon.engine import registry
from compositord.daemon.engine.api import LOOPBACK_HOSTS, PreviewImage
from compositord.daemon.engine.audio.bus import AudioBlock
from compositord.daemon.engine.render.frames import OutputFrame
from compositord.daemon.engine.sinks.base import ErrorLatch, Sink, SinkFrame
from compositord.daemon.state.model import SessionRecord
from compositord.protocol import params as params_schema
from compositord.protocol.params import COMPOSITOR_KIND, OUTPUT_PIN


class SinkSet:
    def __init__(
        self,
        report_error: Callable[[str, str | None], None],
        on_preview: Callable[[str, PreviewImage], None] | None = None,
        *,
        output_dir: str | os.PathLike[str] | None = None,
        min_free_disk_bytes: int | None = None,
        listen_hosts: tuple[str, ...] = LOOPBACK_HOSTS,
    ) -> None:
        self._report_error = report_error
        self._context = registry.SinkContext(
            Path(output_dir) if output_dir is not None else None, on_preview, min_free_disk_bytes, listen_hosts
        )
        self._sinks: dict[str, Sink] = {}
        self._kinds: dict[str, str] = {}  # node -> the kind its sink was made for
        self._miswired: set[str] = set()  # sink nodes fed by something other than a compositor
        self._latches: dict[str, ErrorLatch] = {}
        self._retiring: list[Sink] = []  # told to finish, maybe still flushing
        self._feeds: dict[tuple[str, str], tuple[Sink, ...]] = {}  # (compositor node, output pin) -> the sinks it feeds

    # ---- render thread

    def sync(self, session: SessionRecord, changed: set[str]) -> None:
        """Match the session's sink nodes: start new ones, restart those in ``changed``, retire the rest."""
        nodes = session.nodes
        for node_id in [n for n in self._sinks if n not in nodes or nodes[n].kind != self._kinds[n]]:
            self._retire(self._sinks.pop(node_id))
            del self._kinds[node_id]
            self._miswired.discard(node_id)
            self._latches.pop(node_id, None)
        for node_id, node in nodes.items():
            implementation = registry.sink(node.kind)
            if implementation is None or (node_id in self._sinks and node_id not in changed):
                continue
            old = self._sinks.pop(node_id, None)
            if old is not None:
                self._retire(old)
            latch = self._latches.get(node_id)
            if latch is None:
                latch = self._latches[node_id] = ErrorLatch(node_id, self._report_error)
            full = params_schema.with_defaults(node.kind, node.params)
            sink = implementation.make(node_id, full, latch, old, self._context)
            sink.start()
            self._sinks[node_id] = sink
            self._kinds[node_id] = node.kind
        self._retiring = [sink for sink in self._retiring if not sink.close()]
        feeds: dict[tuple[str, str], list[Sink]] = {}
        for node_id, sink in self._sinks.items():
            upstream = session.inputs_of(node_id).get("in")
            upstream_kind = nodes[upstream.from_node].kind if upstream is not None and upstream.from_node in nodes else None
            if upstream is not None and upstream_kind != COMPOSITOR_KIND:
                # Only compositors produce output frames; say so rather than sit idle.
                self._miswired.add(node_id)
                self._latches[node_id].set(
                    f"{self._kinds[node_id]}: its input must come from a {COMPOSITOR_KIND}, not {upstream_kind}"
                )
                continue
            if node_id in self._miswired:
                self._miswired.discard(node_id)
                self._latches[node_id].set(None)
            if upstream is not None:
                feeds.setdefault((upstream.from_node, upstream.from_pin), []).append(sink)
        self._feeds = {node_id: tuple(sinks) for node_id, sinks in feeds.items()}

    def deliver(
        self,
        compositor_id: str,
        frame: OutputFrame,
        media_time: float,
        fps: int,
        *,
        pin: str = OUTPUT_PIN,
        audio: AudioBlock | None = None,
    ) -> None:
        """A frame of a compositor's output ``pin`` (``out``: the program, or ``preview``) to the sinks it feeds,
        with the compositor's sound since its previous frame there (``audio``; the program only)."""
        sinks = self._feeds.get((compositor_id, pin))
        if sinks:
            item = SinkFrame(frame, media_time, fps, audio)
            for sink in sinks:
                sink.offer(item)

    def _retire(self, sink: Sink) -> None:
        sink.close(wait=False)
        self._retiring.append(sink)

    def close_all(self, timeout: float) -> None:
        """Finish every sink (flush, write trailers) and wait for them, up to ``timeout`` in all."""
        sinks = [*self._sinks.values(), *self._retiring]
        self._sinks.clear()
        self._retiring.clear()
        self._feeds = {}
        for sink in sinks:
            sink.close(wait=False)
        deadline = time.monotonic() + timeout
        for sink in sinks:
            sink.join(max(0.0, deadline - time.monotonic()))

    # ---- any thread

    def get(self, node_id: str) -> Sink | None:
        return self._sinks.get(node_id)

    def preview(self, node_id: str) -> PreviewImage | None:
        """The latest thumbnail of a ``sink::preview`` node (None: not such a node, or none yet)."""
        from compositord.daemon.engine.sinks.preview import PreviewSink  # imported already once such a node exists

        sink = self._sinks.get(node_id)
        return sink.latest if isinstance(sink, PreviewSink) else None

    def stats(self) -> dict[str, dict[str, Any]]:
        return {node_id: sink.stats() for node_id, sink in list(self._sinks.items())}

    def standing_errors(self) -> dict[str, str]:
        """Every sink node's current error (to report again after a topology change)."""
        return {node_id: latch.message for node_id, latch in list(self._latches.items()) if latch.message is not None}
