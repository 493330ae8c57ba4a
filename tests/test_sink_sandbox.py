"""Sink outputs stay inside the output directory, through the render loop, the daemon and `compositord run`.

- paths the schema cannot judge (links out, a FIFO elsewhere, a device node)
  are node errors; nothing outside changes and the other sinks write on;
- paths the schema can judge (absolute, '..') are invalid_params with their
  JSON pointer, and change nothing;
- standard output is never a sink in the daemon (``"-"`` is refused as
  invalid params, also in a pipeline file).

Runtime: ~6 s (a render loop, a daemon, a daemon process)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from compositord.tests.sink_helpers import Peer, running_loop, sink_session, wait_frames_written, wait_until, y4m_pipeline

pytestmark = pytest.mark.gl


async def test_links_out_fifos_elsewhere_and_devices_are_node_errors(tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    outside = tmp_path / "home"
    outside.mkdir()
    bashrc = outside / ".bashrc"
    bashrc.write_text("keep me\n")
    os.mkfifo(outside / "pipe")
    (outputs / "bashrc.y4m").symlink_to(bashrc)
    (outputs / "new.mkv").symlink_to(outside / "created.mkv")
    (outputs / "pipe.y4m").symlink_to(outside / "pipe")
    (outputs / "full.y4m").symlink_to("/dev/full")
    bad = {
        "bashrc": ("sink::y4m", {"path": "bashrc.y4m"}, "a link leads out of the output directory"),
        "created": ("sink::file", {"path": "new.mkv", "preset": "ultrafast"}, "a link leads out of the output directory"),
        "fifo": ("sink::y4m", {"path": "pipe.y4m"}, "a link leads out of the output directory"),
        "full": ("sink::y4m", {"path": "full.y4m"}, "a link leads out of the output directory"),
    }
    if os.geteuid() == 0:  # a device node made inside the directory (mknod needs CAP_MKNOD)
        os.mknod(outputs / "null.y4m", stat.S_IFCHR | 0o600, os.makedev(1, 3))
        bad["device"] = ("sink::y4m", {"path": "null.y4m"}, "device files and sockets are refused")
    sinks = {node: (kind, params) for node, (kind, params, _) in bad.items()}
    session = sink_session({**sinks, "good": ("sink::y4m", {"path": "good.y4m"})})
    async with running_loop(session, outputs) as (loop, recorder):
        await wait_until(lambda: all(recorder.error_of(node) is not None for node in bad))
        await wait_frames_written(loop, "good", 3)  # the compositor's other sink is unaffected
    for node, (kind, _, reason) in bad.items():
        error = recorder.error_of(node)
        assert error is not None and error.startswith(f"{kind}: "), error
        assert reason in error, (node, error)
    assert bashrc.read_text() == "keep me\n" and not (outside / "created.mkv").exists()
    assert (outputs / "good.y4m").read_bytes().startswith(b"YUV4MPEG2 W160 H90")


@pytest.fixture
def compositord_pipeline() -> dict[str, Any]:
    return y4m_pipeline("raw.y4m")


async def test_the_daemon_refuses_absolute_and_dotdot_paths_as_invalid_params(compositord_daemon: Any, tmp_path: Path) -> None:
    from trio_websocket import open_websocket_url

    session = compositord_daemon.session_id
    output_dir = compositord_daemon.settings.output_dir
    victim = tmp_path / "victim.y4m"
    async with open_websocket_url(compositord_daemon.url) as ws:
        peer = Peer(ws)
        before = await peer.request("getpipeline", session_id=session)
        tuned = await peer.request("tunenode", session_id=session, node_id="raw", message={"UpdateParams": {"path": str(victim)}})
        assert (tuned["action"], tuned["code"], tuned["path"]) == (
            "error",
            "invalid_params",
            "/payload/message/UpdateParams/path",
        ), tuned
        patched = await peer.request(
            "tunenode", session_id=session, node_id="raw", message={"PatchParams": {"path": "../victim.y4m"}}
        )
        assert (patched["code"], patched["path"]) == ("invalid_params", "/payload/message/PatchParams/path"), patched
        added = await peer.request(
            "addnode", session_id=session, node_id="rec", kind="sink::file", params={"path": str(tmp_path / "victim.mp4")}
        )
        assert (added["code"], added["path"]) == ("invalid_params", "/payload/params/path"), added
        assert "must be a relative path" in added["message"], added
        after = await peer.request("getpipeline", session_id=session)
    assert after["nodes"] == before["nodes"]  # nothing changed
    assert not victim.exists() and not (tmp_path / "victim.mp4").exists()
    await wait_until(lambda: (output_dir / "raw.y4m").exists())  # the valid relative path landed in the output directory


async def test_the_daemon_never_writes_video_to_its_stdout(compositord_daemon: Any, tmp_path: Path) -> None:
    """Standard output is the daemon's log (the journal under systemd): "-" is refused on every write path."""
    from trio_websocket import open_websocket_url

    session = compositord_daemon.session_id
    async with open_websocket_url(compositord_daemon.url) as ws:
        peer = Peer(ws)
        before = await peer.request("getpipeline", session_id=session)
        tuned = await peer.request("tunenode", session_id=session, node_id="raw", message={"UpdateParams": {"path": "-"}})
        assert (tuned["code"], tuned["path"]) == ("invalid_params", "/payload/message/UpdateParams/path"), tuned
        emptied = await peer.request("tunenode", session_id=session, node_id="raw", message={"UpdateParams": {}})
        assert (emptied["code"], emptied["path"]) == ("invalid_params", "/payload/message/UpdateParams/path"), emptied
        added = await peer.request("addnode", session_id=session, node_id="out", kind="sink::y4m", params={})
        assert (added["code"], added["path"]) == ("invalid_params", "/payload/params/path"), added
        after = await peer.request("getpipeline", session_id=session)
    assert after["nodes"] == before["nodes"]


def test_run_refuses_a_pipeline_that_writes_to_stdout(tmp_path: Path) -> None:
    config = tmp_path / "stdout.yaml"
    config.write_text(yaml.safe_dump(y4m_pipeline("-")))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "compositord",
            "run",
            "--config",
            str(config),
            "--state-dir",
            str(tmp_path / "state"),
            "--port",
            "0",
        ],
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stdout == b""
    assert "/nodes/raw/params/path: standard output" in result.stderr.decode(), result.stderr
