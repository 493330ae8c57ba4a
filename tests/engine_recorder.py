"""An ``api.EngineEvents`` sink for engine tests: keeps what the engine reported, by kind, and checks
that every event arrives on the trio thread as plain data (what a socket between processes could carry)."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

from compositord.daemon.engine import api

# Values a command or an event may hold at any depth, besides dataclasses made of them.
PLAIN_SCALARS = (str, int, float, bool, type(None), bytes)


def assert_plain(value: Any, path: str = "") -> None:
    """Fail, naming the path, unless ``value`` is plain data: scalars, bytes, and dicts (str keys),
    lists, tuples and dataclasses of plain data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for item in dataclasses.fields(value):
            assert_plain(getattr(value, item.name), f"{path}/{item.name}")
    elif isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, str), f"{path}: key {key!r} is not a string"
            assert_plain(item, f"{path}/{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            assert_plain(item, f"{path}/{index}")
    else:
        assert type(value) in PLAIN_SCALARS, f"{path or '/'}: {type(value).__name__} is not plain data"


class EventRecorder:
    def __init__(self) -> None:
        self.trio_thread = threading.get_ident()
        self.views: list[api.ViewData] = []
        self.stats: list[api.NodeStats] = []
        self.errors: list[tuple[str, str | None]] = []  # (node id, error or None when cleared), in order
        self.previews: list[api.PreviewUpdated] = []
        self.started: list[api.Started] = []
        self.failed: list[api.Failed] = []
        self.frames_ended = 0

    def on_event(self, event: api.Event) -> None:
        assert threading.get_ident() == self.trio_thread, "engine events arrive on the trio thread"
        if isinstance(event, api.FrameEnded):
            self.frames_ended += 1  # every frame: counted, not checked
            return
        assert_plain(event)
        if isinstance(event, api.ViewData):
            self.views.append(event)
        elif isinstance(event, api.NodeStats):
            self.stats.append(event)
        elif isinstance(event, api.NodeState):
            self.errors.append((event.node_id, event.error))
        elif isinstance(event, api.PreviewUpdated):
            self.previews.append(event)
        elif isinstance(event, api.Started):
            self.started.append(event)
        elif isinstance(event, api.Failed):
            self.failed.append(event)
        else:
            raise AssertionError(f"not an engine event: {event!r}")

    def error_of(self, node_id: str) -> str | None:
        """The node's current error as reported (None: none, or cleared)."""
        current = None
        for reported_node, message in self.errors:
            if reported_node == node_id:
                current = message
        return current
