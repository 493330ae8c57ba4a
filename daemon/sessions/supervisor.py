"""Engine processes under supervision: one per session, restarted when it fails, parked when it keeps failing.

:class:`SupervisedEngine` is the ``api.Engine`` the session logic holds for a
session in process mode. Behind it runs one ``EngineProcess``
(``control/engine_client.py``) at a time. The engine is ended (SIGKILL) and
started again when

- its process exits (a crash, a kill -9, a render thread that died),
- it reports no frame end for ``stall_frames`` frame intervals (at least
  :data:`MIN_STALL_S`), or no first frame within ``start_timeout_s``,
- its resident memory passes ``memory_budget_mb``,
- it stops reading its commands or sends something that is not a message.

Meanwhile every node of the session shows a ``nodestatechanged`` error that
says why; the restarted engine gets the session as it is stored now (params
and topology) and the view-channel acks of every stamped update it was given
(it renders all of them: acknowledging them is true), and view data sequence
numbers go on from where the last engine left them. A node's error clears when
the new engine renders its first frame without reporting one of its own.

Restarts wait ``restart_backoff_s``, doubled after each failure up to
``restart_backoff_max_s``. After ``park_after_failures`` failures within
``park_window_s`` the session is *parked*: no engine runs, its nodes and its
``state`` in ``getpipeline`` and ``listsessions`` say why, and it stays so
until a client changes it (a tune or a structure change: the fix), which
starts one more engine. Other sessions and the control process go on
untouched throughout: each engine is a process of its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import trio

from compositord.daemon.config import EngineSettings
from compositord.daemon.control.engine_client import EngineProcess
from compositord.daemon.engine import api, wire
from compositord.daemon.state.model import SessionRecord
from compositord.protocol.causal import Stamp

log = logging.getLogger(__name__)

MIN_STALL_S = 2.0  # however fast the frame rate, an engine gets this long between frame ends
CHECK_INTERVAL_S = 0.1  # how often a running engine is looked at (an exit is noticed at once)
MEMORY_CHECK_INTERVAL_S = 1.0
CONTROL_LAG_S = 0.5  # a check this much later than due means the control process was held up, not the engine


class EngineSupervisor:
    """Makes the supervised engines (its :meth:`make_engine` is the daemon's ``EngineFactory``) and runs
    their supervision in ``nursery``."""

    def __init__(
        self,
        nursery: trio.Nursery,
        settings: EngineSettings,
        *,
        asset_dir: Path,
        output_dir: Path | None,
        current_record: Callable[[str], SessionRecord | None],
        device_index: int | None = None,
        environ: Mapping[str, str] | None = None,
        min_free_disk_bytes: int | None = None,
        on_restart: Callable[[str], None] | None = None,
    ) -> None:
        self.nursery = nursery
        self.settings = settings
        self._asset_dir = asset_dir
        self._output_dir = output_dir
        self.current_record = current_record
        self._device_index = device_index
        self._min_free_disk_bytes = min_free_disk_bytes
        self.environ = environ
        self.on_restart = on_restart  # told the session id of every restart (the daemon's metrics)

    def make_engine(self, record: SessionRecord, events: api.EngineEvents) -> SupervisedEngine:
        return SupervisedEngine(record, events, self)

    def engine_config(self, record: SessionRecord) -> wire.EngineConfig:
        return wire.EngineConfig(
            session=record,
            asset_dir=str(self._asset_dir),
            output_dir=str(self._output_dir) if self._output_dir is not None else None,
            device_index=self._device_index,
            listen_hosts=self.settings.listen_hosts,
            min_free_disk_bytes=self._min_free_disk_bytes,
            output_listener=self.settings.output_listener,
            listener_argument=self.settings.listener_argument,
        )


class SupervisedEngine:
    """The ``api.Engine`` of one session in process mode: one engine process at a time, supervised."""

    def __init__(self, record: SessionRecord, events: api.EngineEvents, supervisor: EngineSupervisor) -> None:
        self.session_id = record.session_id
        self._first_record = record
        self._events = events
        self._supervisor = supervisor
        self._settings = supervisor.settings
        self._state = api.ENGINE_STARTING
        self._reason: str | None = None
        self._current: EngineProcess | None = None
        self._generation = 0
        self._restarts = 0
        self._failures: deque[float] = deque()
        self._rss: int | None = None
        self._statistics = api.EngineStatistics(0, 0, 0, 0)
        self._previews: dict[str, api.PreviewImage] = {}
        self._first_settled = trio.Event()
        self._first_failure: str | None = None
        self._started_once = False
        self._stopping = False
        self._stopped = trio.Event()
        self._wake = trio.Event()  # a parked or waiting supervisor looks again (a change, a stop)
        self._view_stamps: dict[str, dict[str, Stamp]] = {}  # node -> sender -> the highest stamp submitted
        self._last_seq: dict[str, int] = {}  # node -> the last view data seq relayed
        self._seq_base: dict[str, int] = {}  # node -> what the current engine's seq counts on from
        self._marked: dict[str, str] = {}  # nodes in error because of the engine -> the message
        self._engine_errors: dict[str, str | None] = {}  # node -> what the current engine last reported
        self._started_at = time.monotonic()

    # ------------------------------------------------------------------ api.Engine

    def start(self) -> None:
        self._supervisor.nursery.start_soon(self._supervise)

    async def wait_first_frame(self) -> None:
        """Returns once the first engine rendered its first frame; ``api.EngineError`` if it failed first
        (supervision goes on: the session restarts or parks)."""
        await self._first_settled.wait()
        if self._first_failure is not None:
            raise api.EngineError(f"the engine of session {self.session_id!r} failed: {self._first_failure}")

    def submit(self, command: api.Command) -> None:
        self._track(command)
        if isinstance(command, api.Stop):
            self._begin_stop()
            return
        if self._state == api.ENGINE_PARKED and isinstance(command, (api.ParamsUpdate, api.BatchUpdate, api.TopologyUpdate)):
            log.info("session %s: changed while parked: starting its engine again", self.session_id)
            self._poke()
        current = self._current
        if current is not None and not current.ended.is_set():
            current.submit(command)

    @contextlib.contextmanager
    def preparing_command(self) -> Iterator[None]:
        """Tell the engine process a command is coming: a frame that starts meanwhile waits a little for it
        (``engine/process.py``). Its ``ParamsUpdate`` settles it; a refusal (an exception) is told. Both go to
        the same process: a restarted engine gets neither."""
        current = self._current
        if current is None or current.ended.is_set():
            yield
            return
        current.command_coming()
        try:
            yield
        except BaseException:
            current.command_settled()
            raise

    def push_frame(self, frame: api.PushedFrame) -> None:
        current = self._current
        if current is not None and current.started and not current.ended.is_set():
            current.push_frame(frame)

    def push_audio(self, audio: api.PushedAudio) -> None:
        current = self._current
        if current is not None and current.started and not current.ended.is_set():
            current.push_audio(audio)

    def statistics(self) -> api.EngineStatistics:
        current = self._current
        if current is not None and current.started and not current.ended.is_set():
            return current.statistics
        return dataclasses.replace(self._statistics, fps=0)  # not rendering: the hub does not pace by it

    def preview(self, node_id: str) -> api.PreviewImage | None:
        current = self._current
        found = current.preview(node_id) if current is not None else None
        return found if found is not None else self._previews.get(node_id)

    def last_progress(self) -> float:
        # The supervisor watches the engine; the service watchdog watches the control process (app.py).
        return time.monotonic()

    def health(self) -> api.EngineHealth:
        current = self._current
        pid = current.pid if current is not None and not current.ended.is_set() else None
        return api.EngineHealth("process", self._state, self._reason, pid, self._restarts, self._rss if pid else None)

    def stop(self, timeout: float = 5.0) -> None:
        """Blocks (call it with ``trio.to_thread.run_sync``): the engine finishes, or is killed at ``timeout``."""
        trio.from_thread.run(self.aclose, timeout)

    async def aclose(self, timeout: float = 5.0) -> None:
        """Stop the engine: it finishes its files and exits; one that has not exited after ``timeout`` s is killed."""
        self._begin_stop()
        current = self._current
        if current is not None:
            with trio.move_on_after(timeout):
                await current.ended.wait()
            if not current.ended.is_set():
                log.warning("session %s: the engine did not finish within %.1f s: killed", self.session_id, timeout)
                current.kill()
        with trio.move_on_after(max(1.0, timeout)):
            await self._stopped.wait()

    # ------------------------------------------------------------------ commands

    def _track(self, command: api.Command) -> None:
        """Remember what a restarted engine needs beyond the store: the stamps it must acknowledge."""
        updates: tuple[api.ParamsUpdate, ...] = ()
        if isinstance(command, api.ParamsUpdate):
            updates = (command,)
        elif isinstance(command, api.BatchUpdate):
            updates = command.updates
            if command.topology is not None:
                self._retain_nodes(command.topology)
        elif isinstance(command, api.TopologyUpdate):
            self._retain_nodes(command.session)
        elif isinstance(command, api.ForgetSender):
            for senders in self._view_stamps.values():
                senders.pop(command.sender, None)
        for update in updates:
            if update.stamp is not None:
                senders = self._view_stamps.setdefault(update.node_id, {})
                known = senders.get(update.stamp.sender)
                if known is None or update.stamp.rev > known.rev:
                    senders[update.stamp.sender] = update.stamp

    def _retain_nodes(self, record: SessionRecord) -> None:
        for node_id in [n for n in self._view_stamps if n not in record.nodes]:
            del self._view_stamps[node_id]

    def _begin_stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        current = self._current
        if current is not None and not current.ended.is_set():
            current.submit(api.Stop())
        self._poke()

    def _poke(self) -> None:
        self._wake.set()

    # ------------------------------------------------------------------ supervision

    async def _supervise(self) -> None:
        settings = self._settings
        backoff = settings.restart_backoff_s
        try:
            while not self._stopping:
                record = self._supervisor.current_record(self.session_id) or (
                    self._first_record if self._generation == 0 else None
                )
                if record is None:
                    break  # the session is gone
                reason, ran_for = await self._run_engine(record)
                if reason is None or self._stopping:
                    break
                now = time.monotonic()
                if ran_for > settings.park_window_s:
                    self._failures.clear()  # it ran well for a while: this failure starts a new count
                    backoff = settings.restart_backoff_s
                self._failures.append(now)
                while self._failures and now - self._failures[0] > settings.park_window_s:
                    self._failures.popleft()
                self._settle_first(reason)
                if len(self._failures) >= settings.park_after_failures:
                    await self._park(reason)
                    continue
                self._set_state(api.ENGINE_RESTARTING, reason)
                log.error(
                    "session %s: engine failed (%s); restarting in %.1f s (%d failures within %.0f s)",
                    self.session_id,
                    reason,
                    backoff,
                    len(self._failures),
                    settings.park_window_s,
                )
                self._mark_nodes(record, f"the session's engine is restarting: {reason}")
                await self._sleep_unless_poked(backoff)
                backoff = min(max(backoff * 2, settings.restart_backoff_s), settings.restart_backoff_max_s)
        finally:
            self._state = api.ENGINE_STOPPED
            self._settle_first("stopped before its first frame")
            self._stopped.set()

    async def _park(self, reason: str) -> None:
        settings = self._settings
        message = (
            f"the session's engine is parked after {len(self._failures)} failures within {settings.park_window_s:g} s "
            f"(the last: {reason}); change the session to start it again"
        )
        self._set_state(api.ENGINE_PARKED, reason)
        log.error("session %s: %s", self.session_id, message)
        record = self._supervisor.current_record(self.session_id)
        if record is not None:
            self._mark_nodes(record, message)
        while not self._stopping:
            self._wake = trio.Event()
            await self._wake.wait()
            if not self._stopping:
                return  # a change: one more engine (it parks again at its next failure within the window)

    async def _sleep_unless_poked(self, seconds: float) -> None:
        self._wake = trio.Event()
        if self._stopping:
            return
        with trio.move_on_after(seconds):
            await self._wake.wait()

    async def _run_engine(self, record: SessionRecord) -> tuple[str | None, float]:
        """One engine process from start to end; why it had to end (None: it was stopped) and for how long it ran."""
        self._generation += 1
        generation = self._generation
        process = EngineProcess(
            self._supervisor.engine_config(record.copy()), _Relay(self, generation), environ=self._supervisor.environ
        )
        self._engine_errors = {}
        self._seq_base = dict(self._last_seq)
        if generation > 1:
            self._restarts += 1
            if self._supervisor.on_restart is not None:
                self._supervisor.on_restart(self.session_id)
            self._set_state(api.ENGINE_STARTING, self._reason)
        started = time.monotonic()
        reason: str | None = None
        # Current before it runs: what is submitted from now on queues behind its configuration (the record
        # was read from the store in this same step, so no change falls between the two).
        self._current = process
        self._seed_acks(process, record)
        if self._stopping:
            process.submit(api.Stop())
        async with trio.open_nursery() as nursery:
            try:
                await nursery.start(process.run)
            except OSError as exc:
                return f"cannot start an engine process: {exc}", 0.0
            reason = await self._watch(process)
            if reason is not None:
                process.kill()
        self._statistics = process.statistics
        self._previews.update(process.previews())
        return reason, time.monotonic() - started

    def _seed_acks(self, process: EngineProcess, record: SessionRecord) -> None:
        """The new engine acknowledges in the view channel every stamped update it renders (all of them)."""
        for node_id, senders in self._view_stamps.items():
            node = record.nodes.get(node_id)
            if node is None:
                continue
            for stamp in senders.values():
                process.submit(api.ParamsUpdate(node_id, node.params, stamp))

    async def _watch(self, process: EngineProcess) -> str | None:
        """Returns why the engine must end, or None once it ended because it was told to stop."""
        settings = self._settings
        next_memory_check = 0.0
        budget = settings.memory_budget_mb * 2**20
        looked = time.monotonic()
        while True:
            with trio.move_on_after(CHECK_INTERVAL_S):
                await process.ended.wait()
            # When this process itself could not run for a while, the engine's reports may just be waiting in
            # the socket: judge its progress only after a round that came on time.
            came_late = time.monotonic() - looked > CHECK_INTERVAL_S + CONTROL_LAG_S
            looked = time.monotonic()
            if self._stopping:
                await process.ended.wait()  # aclose() waits for it, and kills it when it takes too long
                return None
            if process.ended.is_set() or process.exited:
                why = process.failure if process.failure and not process.started else None
                return f"its process ended ({process.exit_description()})" + (f": {why}" if why else "")
            if process.trouble is not None:
                return process.trouble
            if process.failure is not None:
                return f"it failed: {process.failure}"
            now = time.monotonic()
            if not process.started:
                if now - process.spawned_at > settings.start_timeout_s:
                    return f"no first frame within {settings.start_timeout_s:g} s"
            elif not came_late:
                fps = max(1, process.statistics.fps)
                limit = max(settings.stall_frames / fps, MIN_STALL_S)
                last = process.last_frame_end or process.spawned_at
                if now - last > limit:
                    return f"no frame for {now - last:.1f} s ({settings.stall_frames} frame intervals at {fps} fps, at least {MIN_STALL_S:g} s)"
            if now >= next_memory_check:
                next_memory_check = now + MEMORY_CHECK_INTERVAL_S
                self._rss = process.rss_bytes()
                if self._rss is not None and self._rss > budget:
                    return f"it used {self._rss / 2**20:.0f} MB of memory, over its budget of {settings.memory_budget_mb} MB"

    # ------------------------------------------------------------------ states

    def _set_state(self, state: str, reason: str | None) -> None:
        self._state = state
        self._reason = reason

    def _settle_first(self, failure: str) -> None:
        if not self._first_settled.is_set():
            self._first_failure = failure
            self._first_settled.set()

    def _mark_nodes(self, record: SessionRecord, message: str) -> None:
        for node_id in record.nodes:
            self._marked[node_id] = message
            self._events.on_event(api.NodeState(self.session_id, node_id, message))

    def _on_started(self) -> None:
        """The current engine rendered its first frame: clear what the supervisor marked, unless the engine
        itself reported an error for that node."""
        if self._restarts:
            log.info("session %s: engine restarted (%d restarts)", self.session_id, self._restarts)
        self._set_state(api.ENGINE_RUNNING, self._reason)
        self._started_once = True
        if not self._first_settled.is_set():
            self._first_settled.set()
        marked, self._marked = self._marked, {}
        for node_id in marked:
            if self._engine_errors.get(node_id) is None:
                self._events.on_event(api.NodeState(self.session_id, node_id, None))

    def relay(self, generation: int, event: api.Event) -> None:
        """An event of engine ``generation``; those of an engine that was replaced are dropped."""
        if generation != self._generation:
            return
        if isinstance(event, api.ViewData):
            seq = self._seq_base.get(event.node_id, 0) + event.seq
            self._last_seq[event.node_id] = seq
            if seq != event.seq:
                event = dataclasses.replace(event, seq=seq)
        elif isinstance(event, api.NodeState):
            self._engine_errors[event.node_id] = event.error
            if event.error is None and event.node_id in self._marked:
                return  # the supervisor's error stays until this engine has started
        elif isinstance(event, api.NodeStats) and "frames_rendered" in event.stats:
            event = dataclasses.replace(event, stats={**event.stats, "engine": self.health().to_json()})
        elif isinstance(event, api.Started):
            self._events.on_event(event)
            self._on_started()
            return
        self._events.on_event(event)


class _Relay:
    """The ``api.EngineEvents`` sink of one engine process: tags its events with its generation."""

    def __init__(self, engine: SupervisedEngine, generation: int) -> None:
        self._engine = engine
        self._generation = generation

    def on_event(self, event: api.Event) -> None:
        self._engine.relay(self._generation, event)
