"""The operator's settings reach every place that enforces them (hardening issue #14, second half): the
disk floor reaches the render loop's sinks, the stream allowlist reaches every write path."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import trio

from compositord.client import open_client
from compositord.daemon.config import Limits
from compositord.testing.plugin import SMALL_PIPELINE, settings_for, start_daemon


def with_y4m_sink(path: str) -> dict[str, Any]:
    pipeline = copy.deepcopy(SMALL_PIPELINE)
    pipeline["nodes"]["raw"] = {"kind": "sink::y4m", "params": {"path": path}}
    pipeline["connections"].append({"from_node": "comp", "from_pin": "out", "to_node": "raw", "to_pin": "in"})
    return pipeline


async def test_the_disk_floor_setting_reaches_the_sinks_of_the_daemons_render_loops(tmp_path: Path) -> None:
    # A floor above any disk's free space: the sink must stop at once, naming the setting.
    settings = settings_for(tmp_path / "state", with_y4m_sink("out.y4m"), limits=Limits(min_free_disk_bytes=1 << 60))
    async with trio.open_nursery() as nursery:
        daemon = await start_daemon(nursery, settings)
        async with open_client(daemon.url) as client:
            with trio.fail_after(10):
                while True:
                    state = (await client.get_pipeline(daemon.session_id))["nodes"]["raw"]["state"]
                    if state != "ok":
                        break
                    await trio.sleep(0.05)
        assert "min_free_disk_bytes" in state["error"]
        assert not (settings.output_dir / "out.y4m").exists() or (settings.output_dir / "out.y4m").stat().st_size == 0
        nursery.cancel_scope.cancel()
