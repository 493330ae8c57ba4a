"""What the session logic tells an observer (the daemon's metrics) as it works: applied tunes and node stats.

A protocol, so the session logic depends on no metrics library; the daemon
passes its ``control.metrics.DaemonMetrics``, tests pass nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class SessionObserver(Protocol):
    def tunes_applied(self, session_id: str, count: int) -> None:
        """``count`` tunes of the session were applied (stored and handed to its engine)."""
        ...

    def node_stats(self, session_id: str, node_id: str, stats: Mapping[str, Any]) -> None:
        """A node's statistics as its engine reported them (at most once a second per node; 10 times for a compositor with sound)."""
        ...


class NoObserver:
    def tunes_applied(self, session_id: str, count: int) -> None:
        pass

    def node_stats(self, session_id: str, node_id: str, stats: Mapping[str, Any]) -> None:
        pass
