"""Faults of inputs: a node in error is told with ``nodestatechanged`` and shown in ``getpipeline``."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from PIL import Image

from compositord.client.errors import CompositordError
from compositord.protocol import envelope
from compositord.protocol.errors import LocalProtocolError
from compositord.testing.media import write_clip
from compositord.testing.plugin import settings_for


def test_node_state_event_shapes() -> None:
    failed = envelope.node_state_changed("s", "clip", "cannot open clip.mp4: No such file")
    assert failed.event == "nodestatechanged"
    assert failed.payload == {"session_id": "s", "node_id": "clip", "state": {"error": "cannot open clip.mp4: No such file"}}
    cleared = envelope.node_state_changed("s", "clip", None)
    assert cleared.payload["state"] == "ok"
    assert envelope.parse_message(envelope.serialize(failed)) == failed
    with pytest.raises(LocalProtocolError):
        envelope.node_state_changed("s", "clip", "")


# --------------------------------------------------------------------------- through the daemon

W, H = 64, 48


def write_media(folder: Path) -> None:
    write_clip(folder / "good.mkv", frames=5, fps=30)
    (folder / "random.mp4").write_bytes(random.Random(5).randbytes(20_000))
    clip = write_clip(folder / "whole.mkv", frames=5, fps=30).read_bytes()
    (folder / "truncated.mkv").write_bytes(clip[:300])  # the container header, cut off before the first frame
    os.mkfifo(folder / "fifo.mkv")  # opening a FIFO would hold the decoder until a writer comes
    (folder / "outside.mkv").symlink_to(folder.parent / "whole.mkv")
    write_clip(folder.parent / "whole.mkv", frames=5, fps=30)


@pytest.fixture
def compositord_pipeline() -> dict[str, Any]:
    return {
        "nodes": {
            "clip": {"kind": "video::file", "params": {"path": "missing.mkv"}},
            "logo": {"kind": "video::image", "params": {"asset_path": "nope.png"}},
            "bars": {"kind": "video::colorbars", "params": {"width": W, "height": H, "animated": True}},
            "comp": {"kind": "video::compositor", "params": {"width": W, "height": H, "fps": 30, "num_inputs": 2}},
        },
        "connections": [
            {"from_node": "clip", "from_pin": "out", "to_node": "comp", "to_pin": "in_0"},
            {"from_node": "bars", "from_pin": "out", "to_node": "comp", "to_pin": "in_1"},
        ],
    }


@pytest.fixture
def compositord_settings(tmp_path: Path, compositord_pipeline: dict[str, Any]) -> Any:
    settings = settings_for(tmp_path / "state", compositord_pipeline)
    settings.asset_dir.mkdir(parents=True, exist_ok=True)
    write_media(settings.asset_dir)
    Image.new("RGB", (8, 8), (0, 255, 0)).save(settings.asset_dir / "logo.png")
    return settings


async def state_of(client: Any, session: str, node: str) -> Any:
    return (await client.get_pipeline(session))["nodes"][node]["state"]


async def wait_state(client: Any, session: str, node: str, predicate: Callable[[Any], bool], timeout: float = 5.0) -> Any:
    with trio.fail_after(timeout):
        while not predicate(state := await state_of(client, session, node)):
            await trio.sleep(0.02)
    return state


async def state_event(events: Any, node: str, predicate: Callable[[Any], bool], timeout: float = 5.0) -> Any:
    with trio.fail_after(timeout):
        async for event in events:
            if event.name == "nodestatechanged" and event.node_id == node and predicate(event.payload["state"]):
                return event.payload["state"]
    raise AssertionError("the event stream ended")


def is_error(words: str) -> Callable[[Any], bool]:
    return lambda state: isinstance(state, dict) and words in state["error"]


async def test_a_missing_file_is_an_error_the_rest_renders_on_and_a_good_path_clears_it(
    compositord_daemon: Any, compositord_client: Any
) -> None:
    client, session = compositord_client, compositord_daemon.session_id
    state = await wait_state(client, session, "clip", is_error("missing.mkv"))
    assert "no such file in the asset directory" in state["error"]
    assert await state_of(client, session, "comp") == "ok"
    assert await state_of(client, session, "bars") == "ok"
    events = client.events()
    # The compositor renders on: its frame count grows, the colour bars' layer is there, the clip's is not.
    counts = []
    with trio.fail_after(5):
        async for event in events:
            if event.name == "nodestatsupdated" and event.node_id == "comp":
                counts.append(event.payload["stats"]["frames_rendered"])
                if len(counts) == 2:
                    break
    assert counts[1] > counts[0]
    layers = (await client.get_pipeline(session))["nodes"]["comp"]["view_data"]["layers"]
    assert [layer["id"] for layer in layers] == ["in_1"]
    await client.tune(session, "clip", {"path": "good.mkv"})
    assert await state_event(events, "clip", lambda s: s == "ok") == "ok"
    assert await state_of(client, session, "clip") == "ok"
    with trio.fail_after(5):
        while "in_0" not in [
            layer["id"] for layer in (await client.get_pipeline(session))["nodes"]["comp"]["view_data"]["layers"]
        ]:
            await trio.sleep(0.02)


async def test_undecodable_data_is_an_error_each_time_and_clears(compositord_daemon: Any, compositord_client: Any) -> None:
    client, session = compositord_client, compositord_daemon.session_id
    await wait_state(client, session, "clip", is_error("missing.mkv"))
    events = client.events()
    await client.tune(session, "clip", {"path": "random.mp4"})
    state = await state_event(events, "clip", is_error("random.mp4"))
    assert "Invalid data" in state["error"]
    await client.tune(session, "clip", {"path": "truncated.mkv"})
    state = await state_event(events, "clip", is_error("truncated.mkv"))
    assert await state_of(client, session, "clip") == state
    await client.tune(session, "clip", {"path": "good.mkv", "loop": False})
    assert await state_event(events, "clip", lambda s: s == "ok") == "ok"


async def test_only_regular_files_inside_the_asset_directory(compositord_daemon: Any, compositord_client: Any) -> None:
    client, session = compositord_client, compositord_daemon.session_id
    await wait_state(client, session, "clip", is_error("missing.mkv"))
    events = client.events()
    await client.tune(session, "clip", {"path": "fifo.mkv"})
    assert "not a regular file" in (await state_event(events, "clip", is_error("fifo.mkv")))["error"]
    await client.tune(session, "clip", {"path": "outside.mkv"})
    assert "leads out of the asset directory" in (await state_event(events, "clip", is_error("outside.mkv")))["error"]
    # An absolute path or '..' never gets this far: refused with its pointer, nothing changed.
    for bad in ("/etc/passwd", "../whole.mkv"):
        with pytest.raises(CompositordError) as refused:
            await client.tune(session, "clip", {"path": bad})
        assert (refused.value.code, refused.value.path) == ("invalid_params", "/payload/message/PatchParams/path")
    assert (await client.get_pipeline(session))["nodes"]["clip"]["params"]["path"] == "outside.mkv"
    await client.tune(session, "clip", {"path": "good.mkv"})
    assert await state_event(events, "clip", lambda s: s == "ok") == "ok"


async def test_a_missing_image_is_an_error_until_its_asset_exists(compositord_daemon: Any, compositord_client: Any) -> None:
    client, session = compositord_client, compositord_daemon.session_id
    state = await wait_state(client, session, "logo", is_error("nope.png"))
    assert state["error"].startswith("video::image")
    events = client.events()
    await client.tune(session, "logo", {"asset_path": "logo.png"})
    assert await state_event(events, "logo", lambda s: s == "ok") == "ok"
    assert await state_of(client, session, "logo") == "ok"


async def test_a_node_removed_and_added_again_has_its_own_state(compositord_daemon: Any, compositord_client: Any) -> None:
    client, session = compositord_client, compositord_daemon.session_id
    await wait_state(client, session, "clip", is_error("missing.mkv"))
    for _ in range(3):
        # Removed and added again, often within one frame (the render loop sees no change at all):
        # the error is still reported for the node that came back.
        await client.remove_node(session, "clip")
        await client.add_node(session, "clip", "video::file", {"path": "missing.mkv"})
        state = await wait_state(client, session, "clip", is_error("missing.mkv"))
        assert "no such file" in state["error"]
    await client.remove_node(session, "clip")
    await client.add_node(session, "clip", "video::file", {"path": "good.mkv"})
    await wait_state(client, session, "clip", lambda s: s == "ok")


def test_a_decoder_bug_is_shown_as_the_node_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from compositord.daemon.engine.sources import video_file

    def broken(frame: Any) -> Any:
        raise RuntimeError("conversion bug")

    monkeypatch.setattr(video_file, "source_frame_from_av", broken)
    clip = write_clip(tmp_path / "clip.mkv", frames=2)
    source = video_file.VideoFileSource({"path": clip.name}, tmp_path)
    try:
        deadline = time.monotonic() + 3
        while source.error is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert source.error is not None and "decoder failed: RuntimeError: conversion bug" in source.error
        assert source.decoder_alive  # it waits for new params rather than ending
    finally:
        source.close(timeout=2)
    assert not source.decoder_alive


def test_the_same_params_again_retry_a_failed_file(tmp_path: Path) -> None:
    from compositord.daemon.engine.sources.video_file import VideoFileSource

    params = {"path": "later.mkv", "loop": True, "seek_seconds": 0.0}
    source = VideoFileSource(params, tmp_path)
    try:
        deadline = time.monotonic() + 3
        while source.error is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert source.error is not None and "no such file" in source.error
        write_clip(tmp_path / "later.mkv", frames=3)
        source.configure(dict(params))
        deadline = time.monotonic() + 3
        while source.frame() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert source.frame() is not None and source.error is None
    finally:
        source.close(timeout=2)
