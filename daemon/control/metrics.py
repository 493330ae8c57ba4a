"""``GET /metrics``: the daemon's metrics in the Prometheus text format, through ``prometheus_client``.

One :class:`DaemonMetrics` per daemon, with a registry of its own (not the
library's global one: two daemons in one process, as in the tests, must not
share counters). What it exposes (docs/OPERATIONS.md, "Metrics"):

- ``compositord_frames_rendered_total``, ``compositord_frames_dropped_total``,
  ``compositord_frames_late_total`` per ``session``, and
  ``compositord_session_fps``: read from each engine's statistics at scrape
  time (the engine counts; nothing is counted twice);
- ``compositord_render_seconds`` per ``session`` and ``node``: a histogram of
  each compositor's render time per frame, made from the bucket counts its
  engine reports with its node stats (``render_histogram``), so it crosses an
  engine's process boundary as plain data;
- ``compositord_connections``: open WebSocket connections;
- ``compositord_tunes_total`` per ``session``: tunes applied (``tunenode``,
  ``tunenodeasync`` and the tunes of an ``applybatch``; refused ones are not
  counted); its ``rate()`` is tunes per second;
- ``compositord_store_commit_seconds``: how long each SQLite COMMIT (with its
  fsync) took, observed on the store's writer thread;
- ``compositord_engine_restarts_total`` per ``session``: engines restarted by
  the supervisor (engines run inside the daemon's process today, so nothing
  restarts one yet and every session reads 0).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from compositord.daemon.control.http import HttpRequest, HttpResponse
from compositord.daemon.control.router import Handler
from compositord.daemon.engine import api

# SQLite COMMIT with synchronous=FULL: well under a millisecond on tmpfs, tens of ms on a slow disk.
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class DaemonMetrics:
    """The daemon's registry. ``bind`` tells it where to read engines and connections; the session logic
    reports applied tunes and node stats to it (``tunes_applied``, ``node_stats``), the store its commits
    (``commit_observed``, any thread)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._tunes = Counter(
            "compositord_tunes", "Tunes applied (refused ones not counted).", ["session"], registry=self.registry
        )
        self._commit_seconds = Histogram(
            "compositord_store_commit_seconds",
            "Duration of each store COMMIT (SQLite, WAL, synchronous=FULL), in seconds.",
            buckets=COMMIT_BUCKETS,
            registry=self.registry,
        )
        self._engines: Callable[[], Mapping[str, api.Engine]] = dict
        self._connections: Callable[[], int] = lambda: 0
        self._restarts: dict[str, int] = {}
        self._render: dict[tuple[str, str], Mapping[str, Any]] = {}  # (session, node) -> its latest render_histogram
        self._lock = threading.Lock()  # _render and _restarts are written on the trio thread, read by any scraper
        # Also a collector itself: what engines and the server count is read at scrape time, as the client
        # library's documentation recommends for values counted elsewhere.
        self.registry.register(self)

    def bind(self, *, engines: Callable[[], Mapping[str, api.Engine]], connections: Callable[[], int]) -> None:
        self._engines = engines
        self._connections = connections

    # ---- what the rest of the daemon reports

    def tunes_applied(self, session_id: str, count: int = 1) -> None:
        if count > 0:
            self._tunes.labels(session_id).inc(count)

    def node_stats(self, session_id: str, node_id: str, stats: Mapping[str, Any]) -> None:
        histogram = stats.get("render_histogram")
        if isinstance(histogram, Mapping):
            with self._lock:
                self._render[(session_id, node_id)] = histogram

    def commit_observed(self, seconds: float) -> None:
        self._commit_seconds.observe(seconds)

    def engine_restarted(self, session_id: str) -> None:
        with self._lock:
            self._restarts[session_id] = self._restarts.get(session_id, 0) + 1

    # ---- the exposition

    def exposition(self) -> tuple[bytes, str]:
        """The text to serve and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def describe(self) -> list[Metric]:
        return []  # the collector's families depend on the sessions running: nothing to say before a scrape

    def collect(self) -> Iterator[Metric]:
        """The families read at scrape time (the registry calls this; the counters above it collects itself)."""
        engines = dict(self._engines())
        rendered = CounterMetricFamily(
            "compositord_frames_rendered", "Frames rendered by a session's engine.", labels=["session"]
        )
        dropped = CounterMetricFamily(
            "compositord_frames_dropped", "Frame slots skipped because a frame overran them.", labels=["session"]
        )
        late = CounterMetricFamily("compositord_frames_late", "Frames that ended after the next one was due.", labels=["session"])
        fps = GaugeMetricFamily("compositord_session_fps", "The frame rate a session's engine runs at.", labels=["session"])
        restarts = CounterMetricFamily("compositord_engine_restarts", "Engines restarted by the supervisor.", labels=["session"])
        with self._lock:
            restart_counts = dict(self._restarts)
            render = {key: value for key, value in self._render.items() if key[0] in engines}
            self._render = dict(render)  # a destroyed session's histograms go with it
        for session_id, engine in sorted(engines.items()):
            statistics = engine.statistics()
            rendered.add_metric([session_id], statistics.frames_rendered)
            dropped.add_metric([session_id], statistics.frames_dropped)
            late.add_metric([session_id], statistics.frames_late)
            fps.add_metric([session_id], statistics.fps)
            restarts.add_metric([session_id], restart_counts.get(session_id, 0))
        yield from (rendered, dropped, late, fps, restarts)
        render_seconds = HistogramMetricFamily(
            "compositord_render_seconds", "Render time of a compositor's frame, in seconds.", labels=["session", "node"]
        )
        for (session_id, node_id), histogram in sorted(render.items()):
            buckets = _cumulative_buckets(histogram)
            if buckets is not None:
                render_seconds.add_metric([session_id, node_id], buckets, float(histogram.get("sum_ms", 0.0)) / 1000.0)
        yield render_seconds
        connections = GaugeMetricFamily("compositord_connections", "Open WebSocket connections.")
        connections.add_metric([], self._connections())
        yield connections


def _cumulative_buckets(histogram: Mapping[str, Any]) -> list[tuple[str, float]] | None:
    """``{"le_ms": [bounds], "counts": [per bucket, the last one above every bound]}`` as Prometheus buckets
    (cumulative, upper bounds in seconds, ending with +Inf); None when the shape is not that."""
    bounds, counts = histogram.get("le_ms"), histogram.get("counts")
    if not isinstance(bounds, list) or not isinstance(counts, list) or len(counts) != len(bounds) + 1:
        return None
    buckets: list[tuple[str, float]] = []
    total = 0.0
    for bound, count in zip([*bounds, None], counts, strict=True):
        total += float(count)
        buckets.append(("+Inf" if bound is None else repr(float(bound) / 1000.0), total))
    return buckets


def metrics_route(metrics: DaemonMetrics) -> Handler:
    """``GET /metrics``: the exposition, made at each scrape."""

    async def answer(request: HttpRequest) -> HttpResponse:
        body, content_type = metrics.exposition()
        return HttpResponse(200, body, (("cache-control", "no-store"),), content_type)

    return answer
