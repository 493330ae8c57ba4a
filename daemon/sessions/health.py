"""What is wrong with the running pipelines, for ``GET /healthz``: plain data, one entry per problem.

A pipeline is unhealthy when its engine has not finished a frame for a while
(stalled or stopped: a failed render thread, a hung driver) or when one of
its nodes is in the error state (a missing file, a peer gone, a full disk):
the same states ``getpipeline`` and ``nodestatechanged`` report.
"""

from __future__ import annotations

import time
from typing import Any

from compositord.daemon.sessions.live import LiveSessions

# An engine that finished no frame for this long, or for this many of its frame periods if that is longer, is stalled.
STALL_SECONDS = 3.0
STALL_FRAMES = 5


def problems(live_sessions: LiveSessions, now: float | None = None) -> list[dict[str, Any]]:
    """``[{"session_id", "problem": "stalled" | "node_error", "node_id"?, "message"}]``, sorted; [] when healthy."""
    now = time.monotonic() if now is None else now
    found: list[dict[str, Any]] = []
    for session_id, live in sorted(live_sessions.items()):
        fps = live.engine.statistics().fps
        silence = now - live.engine.last_progress()
        limit = max(STALL_SECONDS, STALL_FRAMES / fps) if fps > 0 else STALL_SECONDS
        if silence > limit:
            found.append({"session_id": session_id, "problem": "stalled", "message": f"no frame finished for {silence:.1f} s"})
        for node_id, message in sorted(live.node_errors.items()):
            found.append({"session_id": session_id, "problem": "node_error", "node_id": node_id, "message": message})
    return found
