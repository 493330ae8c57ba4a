"""The operator's settings reach every place that enforces them (hardening issue #14, second half): the
disk floor reaches the render loop's sinks, the stream allowlist reaches every write path."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import trio

from compositord.cli.main import main as cli_main
from compositord.client import CompositordError, open_client
from compositord.daemon.config import Limits, Settings, SettingsError
from compositord.daemon.state.lock import StateDirectoryLock
from compositord.protocol.envelope import PATCH, AddNode, TuneNode
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
        assert settings.output_dir is not None
        output = settings.output_dir / "out.y4m"
        assert not output.exists() or output.stat().st_size == 0
        nursery.cancel_scope.cancel()


ALLOWED = "udp://192.0.2.10:5000"  # TEST-NET-1: an address the operator listed; loopback is then not allowed


def stream_node(url: str) -> dict[str, Any]:
    return {"kind": "sink::stream", "params": {"url": url}}


async def test_the_stream_allowlist_applies_to_pipeline_files_createsession_addnode_tunes_and_batches(tmp_path: Path) -> None:
    pipeline = copy.deepcopy(SMALL_PIPELINE)
    pipeline["nodes"]["out"] = stream_node(ALLOWED)  # a pipeline file: loaded by the daemon's rules
    settings = settings_for(tmp_path / "state", pipeline, allowed_stream_destinations=(ALLOWED,))
    async with trio.open_nursery() as nursery:
        daemon = await start_daemon(nursery, settings)
        async with open_client(daemon.url) as client:
            session = daemon.session_id
            await client.add_node(session, "out2", "sink::stream", {"url": ALLOWED})
            await client.tune(session, "out2", {"url": ALLOWED})
            await client.apply_batch(session, [AddNode(session, "out4", "sink::stream", {"url": ALLOWED})])
            created = await client.create_session("more", {"nodes": {"s": stream_node(ALLOWED)}, "connections": []})
            for refused in (
                client.add_node(session, "out3", "sink::stream", {"url": "udp://127.0.0.1:5000"}),
                client.tune(session, "out2", {"url": "udp://127.0.0.1:5000"}),
                client.create_session("loop", {"nodes": {"s": stream_node("udp://127.0.0.1:5000")}, "connections": []}),
                client.apply_batch(session, [TuneNode(session, "out2", PATCH, {"url": "udp://127.0.0.1:5000"})]),
                client.apply_batch(session, [AddNode(session, "out5", "sink::stream", {"url": "udp://127.0.0.1:5000"})]),
            ):
                try:
                    await refused
                except CompositordError as error:
                    assert error.code == "invalid_params" and "allowed_stream_destinations" in str(error)
                else:
                    raise AssertionError("a stream to a destination the operator did not list was accepted")
            nodes = (await client.get_pipeline(session))["nodes"]
            assert nodes["out2"]["params"]["url"] == ALLOWED and "out4" in nodes
            assert "out3" not in nodes and "out5" not in nodes
            await client.destroy_session(created)
        nursery.cancel_scope.cancel()


def test_compositord_run_checks_the_pipeline_file_by_the_daemons_allowlist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline = copy.deepcopy(SMALL_PIPELINE)
    pipeline["nodes"]["out"] = stream_node(ALLOWED)
    settings = settings_for(tmp_path / "state", pipeline)
    monkeypatch.setenv("COMPOSITORD_ALLOWED_STREAM_DESTINATIONS", ALLOWED)
    # The state directory is held by "another daemon": run gets past the pipeline check, then stops there.
    held = StateDirectoryLock.acquire(settings.state_dir)
    try:
        status = cli_main(["run", "--config", str(settings.pipeline_file), "--state-dir", str(settings.state_dir), "--port", "0"])
    finally:
        held.release()
    err = capsys.readouterr().err
    assert status == 1
    assert "in use by another compositord" in err
    assert "/url" not in err


def test_the_partial_message_budget_and_the_queued_bytes_bound_are_settings() -> None:
    limits = Limits.from_environ({"COMPOSITORD_MAX_PARTIAL_BYTES": "64M", "COMPOSITORD_MAX_QUEUED_BYTES": "2M"})
    options = Settings(limits=limits).server_options()
    assert options.max_partial_bytes == 64 << 20
    assert options.limits.mailbox_bytes == 2 << 20
    defaults = Settings().server_options()
    assert (defaults.max_partial_bytes, defaults.limits.mailbox_bytes) == (256 << 20, 8 << 20)
    with pytest.raises(SettingsError, match="max_queued_bytes"):
        Limits(max_queued_bytes=0)


async def test_the_ingest_source_allowlist_applies_to_every_path_that_adds_a_pull(tmp_path: Path) -> None:
    origin = "https://cdn.example.com"
    settings = settings_for(tmp_path / "state", SMALL_PIPELINE, allowed_ingest_sources=(origin,))
    async with trio.open_nursery() as nursery:
        daemon = await start_daemon(nursery, settings)
        async with open_client(daemon.url) as client:
            session = daemon.session_id
            listed = {"url": f"{origin}/live/index.m3u8", "open_timeout_s": 1.0}
            await client.add_node(session, "pull", "av::stream_in", listed)
            for refused in (
                client.add_node(session, "inside", "av::stream_in", {"url": "http://169.254.169.254/latest/meta-data"}),
                client.tune(session, "pull", {"url": "rtsp://10.0.0.5/cam"}),
                client.apply_batch(session, [AddNode(session, "other", "av::stream_in", {"url": "rtmp://203.0.113.9/live/x"})]),
            ):
                try:
                    await refused
                except CompositordError as error:
                    assert error.code == "invalid_params" and "allowed_ingest_sources" in str(error)
                else:
                    raise AssertionError("a pull from a source the operator did not list was accepted")
            nodes = (await client.get_pipeline(session))["nodes"]
            assert nodes["pull"]["params"]["url"] == listed["url"]
            assert "inside" not in nodes and "other" not in nodes
        nursery.cancel_scope.cancel()


def test_the_ingest_source_allowlist_comes_from_the_environment_and_a_bad_entry_stops_the_start() -> None:
    import argparse

    settings = Settings.from_args(
        argparse.Namespace(), {"COMPOSITORD_ALLOWED_INGEST_SOURCES": "https://cdn.example.com, rtsp://10.0.0.0/8:554"}
    )
    assert settings.allowed_ingest_sources == ("https://cdn.example.com", "rtsp://10.0.0.0/8:554")
    assert settings.validation_context().ingest_sources.refusal("rtsp://10.2.3.4/cam", schemes=("rtsp",)) is None
    with pytest.raises(SettingsError, match="allowed_ingest_sources"):
        Settings.from_args(argparse.Namespace(), {"COMPOSITORD_ALLOWED_INGEST_SOURCES": "gopher://example.com"})
