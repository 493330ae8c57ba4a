"""The daemon as one trio service: store, engines, sessions, server, sd_notify.

``serve(settings, task_status=...)`` is started with ``nursery.start`` (tests,
the pytest plugin) or run by ``compositord run``. It reports the bound
``(host, port)`` once the listener is bound and every pipeline has rendered a
frame, which is also when systemd gets ``READY=1``.

Shutdown has one seam, as in hypercorn's ``worker_serve``: whatever ends the
service (SIGTERM or SIGINT, or the caller cancelling it), :func:`serve` tells
systemd ``STOPPING=1``, closes every client with 1001, stops the engines,
flushes the store and returns, all within ``stop_timeout``. The services run
in a shielded scope so that a cancellation from outside still lets this drain
happen in order; only then is that scope cancelled.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Mapping

import trio

from compositord.daemon.config import Settings, demo_pipeline, load_pipeline, session_name_for
from compositord.daemon.control.connection import CLOSE_GOING_AWAY
from compositord.daemon.control.health import HEALTH_PATH, health_route
from compositord.daemon.control.hub import Hub
from compositord.daemon.control.metrics import DaemonMetrics, metrics_route
from compositord.daemon.control.panel_files import AUTH_CHECK_PATH, auth_check, panel_routes
from compositord.daemon.control.server import ControlServer
from compositord.daemon.engine.api import Engine, EngineError, EngineEvents, EngineFactory
from compositord.daemon.notify import Notifier, watchdog_from_environment
from compositord.daemon.sessions.service import SessionService
from compositord.daemon.sessions.supervisor import EngineSupervisor
from compositord.daemon.state.model import SessionRecord
from compositord.daemon.state.store import Store, StoreError
from compositord.protocol.errors import LocalProtocolError

log = logging.getLogger(__name__)

# systemd's TimeoutStopSec in deploy/compositord.service is 15 s: drain well inside it.
DEFAULT_STOP_TIMEOUT = 10.0


def render_loop_factory(settings: Settings, *, device_index: int | None = None) -> EngineFactory:
    """Engines in this process (``engine_mode = "thread"``): a render loop per session, each making its GL
    context in its own thread. Call the factory on the trio thread: the loop reports through that trio run."""

    def make(record: SessionRecord, events: EngineEvents) -> Engine:
        # Imported here: the render loop pulls in moderngl and the codecs; the control side does not.
        from compositord.daemon.engine.loop import RenderLoop

        return RenderLoop(
            record,
            events,
            trio_token=trio.lowlevel.current_trio_token(),
            asset_dir=settings.asset_dir,
            output_dir=settings.output_dir,
            device_index=device_index,
            min_free_disk_bytes=settings.limits.min_free_disk_bytes,
            listen_hosts=settings.engine.listen_hosts,
        )

    return make


class _Services:
    """Everything the daemon runs, in one shielded nursery that only :meth:`stop` ends."""

    def __init__(
        self,
        settings: Settings,
        notifier: Notifier,
        environ: Mapping[str, str] | None,
        engine_factory: EngineFactory | None,
        device_index: int | None,
    ) -> None:
        self.settings = settings
        self.notifier = notifier
        self.environ = environ
        self.engine_factory = engine_factory  # None: the settings' engine mode decides
        self.device_index = device_index
        self.metrics = DaemonMetrics()
        self.store = Store(settings.state_dir, commit_observer=self.metrics.commit_observed)
        self.hub = Hub()
        self.service: SessionService | None = None
        self.server: ControlServer | None = None
        # Made up front so that stop() can cancel it even before run() has entered it.
        self._scope = trio.CancelScope(shield=True)
        self._done = trio.Event()
        self._ready = trio.Event()
        self._address: tuple[str, int] | None = None

    async def wait_ready(self) -> tuple[str, int]:
        """The bound address, once every pipeline has rendered its first frame (cancellable)."""
        await self._ready.wait()
        assert self._address is not None
        return self._address

    async def run(self) -> None:
        # Not started with nursery.start(): trio's task_status.started() does nothing when the
        # caller was cancelled meanwhile (a SIGTERM during start-up), and start() would then wait
        # forever for this shielded task, which only stop() ends: the daemon hung unkillable.
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    await nursery.start(self.store.run)
                    self.service = SessionService(
                        self.store,
                        self.hub,
                        self._engine_factory(nursery),
                        retired_acks_grace_s=self.settings.limits.retired_acks_grace_s,
                        max_retired_acks=self.settings.limits.max_retired_acks,
                        observer=self.metrics,
                        asset_dir=self.settings.asset_dir,
                        validation_context=self.settings.validation_context(),
                        budget=self.settings.limits.budget(),
                    )
                    # Coalescable events leave at most once per output frame of their session (PROTOCOL.md section 4).
                    nursery.start_soon(self.hub.run, self.service.frame_period)
                    await self._open_sessions()
                    self.server = self._make_server(self.service)
                    address = await nursery.start(self.server.run)
                    watchdog = watchdog_from_environment(self.notifier, self._progress(), self.environ)
                    if watchdog is not None:
                        await nursery.start(watchdog.run)
                    self.notifier.ready(f"serving ws://{address[0]}:{address[1]}/api/v1/control")
                    self._address = address
                    self._ready.set()
        finally:
            self._done.set()

    def _make_server(self, service: SessionService) -> ControlServer:
        """The server with the panel's files, ``/metrics`` and ``/healthz`` (public: the panel and the health check)."""
        panel = panel_routes()
        server: ControlServer | None = None
        health = health_route(service.problems, lambda: server is not None and server.accepting)
        routes = {
            **panel,
            ("GET", "/metrics"): metrics_route(self.metrics),
            ("GET", HEALTH_PATH): health,
            ("GET", AUTH_CHECK_PATH): auth_check,
        }
        server = ControlServer(
            self.settings.server_options(), service, routes=routes, public_paths={path for _, path in panel} | {HEALTH_PATH}
        )
        self.metrics.bind(engines=lambda: service.engines, connections=lambda: len(server.connections) if server else 0)
        return server

    def _engine_factory(self, nursery: trio.Nursery) -> EngineFactory:
        if self.engine_factory is not None:
            return self.engine_factory
        if self.settings.engine.mode == "thread":
            return render_loop_factory(self.settings, device_index=self.device_index)
        store = self.store
        supervisor = EngineSupervisor(
            nursery,
            self.settings.engine,
            asset_dir=self.settings.asset_dir,
            output_dir=self.settings.output_dir,
            current_record=lambda session_id: store.sessions().get(session_id),
            device_index=self.device_index,
            environ=self.environ,
            min_free_disk_bytes=self.settings.limits.min_free_disk_bytes,
            on_restart=self.metrics.engine_restarted,
        )
        return supervisor.make_engine

    def _progress(self) -> Callable[[], list[float]]:
        """What the service watchdog checks besides its own ticks. In process mode nothing: the control
        process is healthy while this trio run gets the watchdog's task to run on time (a hung engine is
        its supervisor's to restart, not a reason to restart the service and every other session with
        it). In thread mode the render loops share this process, so a hung one is the service's problem."""
        if self.engine_factory is None and self.settings.engine.mode == "process":
            return list
        service = self.service
        assert service is not None
        return lambda: [engine.last_progress() for engine in service.engines.values()]

    async def _open_sessions(self) -> None:
        assert self.service is not None
        stored = dict(self.store.sessions())
        configured_id = session_name_for(self.settings.pipeline_file)
        if configured_id not in stored:
            pipeline = (
                demo_pipeline()
                if self.settings.pipeline_file is None
                else load_pipeline(self.settings.pipeline_file, context=self.settings.validation_context())
            )
            record = SessionRecord.from_pipeline(configured_id, configured_id, pipeline)
            await self.store.create_session(record)
            log.info("created session %r from %s", configured_id, self.settings.pipeline_file or "the demo pipeline")
        supervised = self.engine_factory is None and self.settings.engine.mode == "process"
        service = self.service

        async def open_one(session_id: str, record: SessionRecord) -> None:
            try:
                started = await service.restore_session(record)  # one over a budget is parked, not started
            except EngineError as exc:
                if not supervised:
                    raise
                # Its supervisor restarts it (or parks it): the daemon serves the other sessions meanwhile.
                log.error("session %r: %s", session_id, exc)
            else:
                if started:
                    log.info("session %r: first frame rendered", session_id)

        # All at once: an engine process takes a while to start, and a failing one must not hold up the rest.
        async with trio.open_nursery() as opening:
            for session_id, record in self.store.sessions().items():
                opening.start_soon(open_one, session_id, record)

    async def stop(self, timeout: float) -> None:
        """Drain in order (clients 1001, engines, store), then end the services; at most ``timeout`` s."""
        deadline = trio.current_time() + timeout
        with trio.CancelScope(shield=True):
            if not self._ready.is_set():
                # Stopped during start-up: abandon the start first, so that no pipeline opens after the drain.
                self._scope.cancel()
                with trio.move_on_at(deadline - min(1.0, timeout / 4)):
                    await self._done.wait()
            with trio.move_on_at(deadline - min(1.0, timeout / 4)) as drain_scope:
                self.notifier.stopping("closing clients")
                if self.server is not None:
                    await self.server.close_all(CLOSE_GOING_AWAY, "server shutting down")
                if self.service is not None:
                    remaining = max(0.5, deadline - trio.current_time() - 1.0)
                    await self.service.stop_all(timeout=remaining)
                try:
                    await self.store.flush()
                except LocalProtocolError:
                    pass  # the store is not running (it failed or never started): nothing to flush
                except StoreError as exc:
                    log.error("flushing the store at shutdown: %s", exc)
            if drain_scope.cancelled_caught:
                log.warning("shutdown drain did not finish within %.1f s; stopping anyway", timeout)
            self._scope.cancel()  # the store commits what is queued as it stops
            with trio.move_on_at(deadline + 1.0):
                await self._done.wait()


async def serve(
    settings: Settings,
    *,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
    stop_timeout: float = DEFAULT_STOP_TIMEOUT,
    handle_signals: bool = True,
    environ: Mapping[str, str] | None = None,
    device_index: int | None = None,
    engine_factory: EngineFactory | None = None,
) -> None:
    """Run the daemon until SIGTERM/SIGINT (when ``handle_signals``) or until cancelled.

    ``task_status.started((host, port))`` once bound and every pipeline has rendered a frame (or, in
    process mode, its engine failed and is being restarted). ``engine_factory`` makes each session's
    engine; by default ``settings.engine.mode`` decides: supervised engine processes
    (``sessions/supervisor.py``) or render loops in this process (:func:`render_loop_factory`).
    ``device_index`` picks the GPU of either; tests and benchmarks may pass their own factory.
    """
    notifier = Notifier(environ)
    services = _Services(settings, notifier, environ, engine_factory, device_index)
    try:
        async with trio.open_nursery() as nursery:
            try:
                # Signals first: a SIGTERM while the pipelines start drains just the same.
                if handle_signals and threading.current_thread() is threading.main_thread():
                    await nursery.start(_cancel_on_signal, nursery.cancel_scope)
                nursery.start_soon(services.run)
                address = await services.wait_ready()
                task_status.started(address)
                await trio.sleep_forever()
            finally:
                await services.stop(stop_timeout)
    finally:
        notifier.close()


async def _cancel_on_signal(scope: trio.CancelScope, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for signum in signals:
            log.info("%s: shutting down", signal.Signals(signum).name)
            scope.cancel()
            return
