"""The compositord trio test harness, as a pytest plugin (entry point ``pytest11``: ``compositord``).

Installed with the package, so any project that depends on compositord (and
uses pytest-trio with ``trio_mode = true``, or marks its tests
``@pytest.mark.trio``) gets these fixtures without importing anything:

- ``compositord_pipeline``: the pipeline document the daemon starts with (a
  small, fast one: 160x90 colorbars into input 0 of a 160x90 compositor with
  two inputs). Override the fixture to use another.
- ``compositord_settings``: :class:`~compositord.daemon.config.Settings` for
  127.0.0.1 port 0, a temporary state directory, and that pipeline.
- ``compositord_daemon``: the daemon running inside the test, started with
  ``nursery.start(serve, settings)``; a :class:`RunningDaemon` with its
  ``url``. When the test ends it is shut down the way SIGTERM does it
  (clients closed with 1001, render loops stopped, store flushed).
- ``compositord_client``: a connected client (``compositord.client``).

See docs/TESTING.md.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import trio
import yaml

if TYPE_CHECKING:
    # Imported lazily: this plugin loads (entry point pytest11) before pytest-cov starts measuring,
    # so a module-level import here would hide compositord's module-level lines from coverage.
    from compositord.daemon.config import Settings
    from compositord.daemon.engine.api import EngineFactory

SESSION_ID = "pipeline"

SMALL_PIPELINE: dict[str, Any] = {
    "nodes": {
        "bars": {"kind": "video::colorbars", "params": {"width": 160, "height": 90}},
        "comp": {"kind": "video::compositor", "params": {"width": 160, "height": 90, "fps": 30, "num_inputs": 2}},
    },
    "connections": [{"from_node": "bars", "from_pin": "out", "to_node": "comp", "to_pin": "in_0"}],
}


@dataclass(frozen=True)
class RunningDaemon:
    host: str
    port: int
    settings: Settings
    session_id: str  # the session made from the pipeline file (its file name without suffix)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}/api/v1/control"

    @property
    def database(self) -> Path:
        from compositord.daemon.state.store import database_path

        return database_path(self.settings.state_dir)


def settings_for(state_dir: Path, pipeline: dict[str, Any], **overrides: Any) -> Settings:
    """Settings for a test daemon: port 0 on loopback, ``pipeline`` written as ``pipeline.yaml`` into ``state_dir``."""
    from compositord.daemon.config import Settings

    state_dir.mkdir(parents=True, exist_ok=True)
    pipeline_file = state_dir / f"{SESSION_ID}.yaml"
    pipeline_file.write_text(yaml.safe_dump(pipeline), encoding="utf-8")
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "state_dir": state_dir,
        "asset_dir": state_dir / "assets",
        "pipeline_file": pipeline_file,
    }
    values.update(overrides)
    return Settings(**values)


async def start_daemon(
    nursery: trio.Nursery, settings: Settings, *, stop_timeout: float = 5.0, engine_factory: EngineFactory | None = None
) -> RunningDaemon:
    """Start the daemon in ``nursery``; cancel the nursery (or its scope) to shut it down cleanly.
    ``engine_factory``: how each session's engine is made (default: the daemon's render loop)."""
    from compositord.daemon.app import serve
    from compositord.daemon.config import session_name_for

    host, port = await nursery.start(
        lambda task_status: serve(
            settings, task_status=task_status, stop_timeout=stop_timeout, handle_signals=False, engine_factory=engine_factory
        )
    )
    return RunningDaemon(host, port, settings, session_name_for(settings.pipeline_file))


@pytest.fixture
def compositord_pipeline() -> dict[str, Any]:
    import copy

    return copy.deepcopy(SMALL_PIPELINE)


@pytest.fixture
def compositord_settings(tmp_path: Path, compositord_pipeline: dict[str, Any]) -> Settings:
    return settings_for(tmp_path / "compositord-state", compositord_pipeline)


@pytest.fixture
async def compositord_daemon(compositord_settings: Settings) -> AsyncIterator[RunningDaemon]:
    async with trio.open_nursery() as nursery:
        daemon = await start_daemon(nursery, compositord_settings)
        yield daemon
        nursery.cancel_scope.cancel()


@pytest.fixture
async def compositord_client(compositord_daemon: RunningDaemon) -> AsyncIterator[Any]:
    from compositord.client import open_client

    async with open_client(compositord_daemon.url) as client:
        yield client
