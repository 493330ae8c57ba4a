"""The store under faults (hardening issue #14): one daemon per state directory, a damaged or
vanished database found at start, and a full disk that refuses changes without stopping the store.

Each test failed on the store as it was: a second daemon opened the same directory (and one of
them lost an acknowledged tune), a corrupt store was served until the first write touched the bad
page, a store truncated to 0 bytes started empty, and a full disk ended the writer (and the daemon)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import trio

from compositord.daemon.state import store as store_module
from compositord.daemon.state.model import SessionRecord
from compositord.daemon.state.store import (
    StoreCorrupt,
    StoreError,
    StoreFull,
    StoreLocked,
    StoreMissing,
    database_path,
    marker_path,
    open_store,
)
from compositord.protocol import params
from compositord.tests.disk_helpers import CannotMount, fill, small_tmpfs

PIPELINE = params.validate_pipeline(
    {
        "nodes": {
            "bars": {"kind": "video::colorbars", "params": {"width": 64, "height": 36}},
            "comp": {"kind": "video::compositor", "params": {"width": 64, "height": 36, "num_inputs": 1}},
        },
        "connections": [{"from_node": "bars", "from_pin": "out", "to_node": "comp", "to_pin": "in_0"}],
    }
)

HOLD_THE_STORE = """
import sys, trio
from pathlib import Path
from compositord.daemon.state.store import open_store

async def main():
    async with open_store(Path(sys.argv[1])):
        print("open", flush=True)
        await trio.sleep(120)

trio.run(main)
"""


async def make_store(state_dir: Path, sessions: int = 2) -> None:
    async with open_store(state_dir) as store:
        for index in range(sessions):
            await store.create_session(SessionRecord.from_pipeline(f"s{index}", f"s{index}", PIPELINE))


def stored_params(state_dir: Path) -> dict[tuple[str, str], str]:
    """What another connection reads from the store's files (committed changes, in the WAL or not)."""
    conn = sqlite3.connect(database_path(state_dir))
    try:
        return {(s, n): p for s, n, p in conn.execute("SELECT session_id, node_id, params FROM nodes")}
    finally:
        conn.close()


# --- one daemon per state directory -------------------------------------------------------------


async def test_a_second_process_cannot_open_the_same_state_directory(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD_THE_STORE, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None  # stdout=PIPE
        assert await trio.to_thread.run_sync(holder.stdout.readline) == "open\n"
        with pytest.raises(StoreLocked) as info:
            async with open_store(tmp_path):
                pass
        assert str(tmp_path) in str(info.value)
        assert f"pid {holder.pid}" in str(info.value)
        assert isinstance(info.value, StoreError), "compositord run reports StoreErrors in one line"
    finally:
        holder.kill()
        holder.wait()
    async with open_store(tmp_path) as store:  # the kernel dropped the killed holder's lock
        assert store.sessions() == {}


async def test_the_lock_is_held_until_the_store_is_closed(tmp_path: Path) -> None:
    async with open_store(tmp_path):
        with pytest.raises(StoreLocked):
            async with open_store(tmp_path):
                pass
    async with open_store(tmp_path):
        pass


@pytest.mark.gl
def test_a_second_daemon_on_one_state_directory_exits_naming_the_first(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "compositord", "run", "--state-dir", str(tmp_path), "--port", "0"]
    stderr_path = tmp_path / "first.log"
    with stderr_path.open("wb") as stderr:
        first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = 60.0
        while "compositord: serving" not in stderr_path.read_text(errors="replace"):
            assert first.poll() is None, stderr_path.read_text(errors="replace")
            deadline -= 0.1
            assert deadline > 0, "the first daemon did not start"
            subprocess.run(["sleep", "0.1"], check=True)
        second = subprocess.run(command, capture_output=True, timeout=60)
        assert second.returncode == 1
        message = second.stderr.decode()
        assert f"compositord run: the state directory {tmp_path} is in use by another compositord (pid {first.pid})" in message
        assert first.poll() is None, "the first daemon runs on"
    finally:
        first.terminate()
        first.wait(timeout=30)


# --- integrity at start -----------------------------------------------------------------------


async def test_a_corrupt_page_is_found_at_start_and_the_file_kept(tmp_path: Path) -> None:
    await make_store(tmp_path)
    db = database_path(tmp_path)
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    root = conn.execute("SELECT rootpage FROM sqlite_schema WHERE name = 'nodes'").fetchone()[0]
    conn.close()
    with db.open("r+b") as file:
        file.seek((root - 1) * page_size + 8)
        file.write(os.urandom(page_size - 8))  # the page's header stays; its cells are garbage
    damaged = db.read_bytes()
    with pytest.raises(StoreCorrupt) as info:
        async with open_store(tmp_path):
            pass
    assert str(db) in str(info.value) and "integrity check" in str(info.value)
    assert db.read_bytes() == damaged, "the damaged file is left for the operator"


async def test_a_file_that_is_not_a_database_is_corrupt(tmp_path: Path) -> None:
    await make_store(tmp_path)
    database_path(tmp_path).write_bytes(b"this is not SQLite" * 512)
    with pytest.raises(StoreCorrupt):
        async with open_store(tmp_path):
            pass


async def test_a_store_truncated_to_nothing_is_not_a_fresh_start(tmp_path: Path) -> None:
    await make_store(tmp_path)
    assert marker_path(database_path(tmp_path)).exists()
    os.truncate(database_path(tmp_path), 0)
    with pytest.raises(StoreMissing) as info:
        async with open_store(tmp_path):
            pass
    assert "empty (0 bytes)" in str(info.value)
    assert database_path(tmp_path).stat().st_size == 0, "nothing was created over it"


async def test_a_deleted_store_with_its_marker_is_missing_and_without_it_starts_empty(tmp_path: Path) -> None:
    await make_store(tmp_path)
    db = database_path(tmp_path)
    db.unlink()
    with pytest.raises(StoreMissing) as info:
        async with open_store(tmp_path):
            pass
    assert "missing" in str(info.value) and str(marker_path(db)) in str(info.value)
    assert not db.exists()
    marker_path(db).unlink()  # what the message tells an operator who wants to start over
    async with open_store(tmp_path) as store:
        assert store.sessions() == {}
    assert marker_path(db).exists()


async def test_an_older_store_without_a_marker_gets_one(tmp_path: Path) -> None:
    await make_store(tmp_path, sessions=1)
    marker_path(database_path(tmp_path)).unlink()
    async with open_store(tmp_path) as store:
        assert set(store.sessions()) == {"s0"}
    assert marker_path(database_path(tmp_path)).exists()


# --- a full disk ---------------------------------------------------------------------------------


@pytest.fixture
def tiny_state_dir(tmp_path: Path) -> Any:
    try:
        with small_tmpfs(tmp_path / "state", "1m") as mounted:
            yield mounted
    except CannotMount as exc:
        pytest.skip(str(exc))


def big_params(index: int) -> dict[str, Any]:
    """About 32 KB of valid compositor params, different for every index."""
    text = f"{index:08d}" * 120
    overlays = [{"id": f"t{n}", "text": text[: 1000 - n]} for n in range(32)]
    return params.validate("video::compositor", {"width": 64, "height": 36, "num_inputs": 1, "text_overlays": overlays})


async def test_a_full_disk_refuses_changes_and_the_store_goes_on_once_there_is_space(tiny_state_dir: Path) -> None:
    async with open_store(tiny_state_dir, commit_interval=0.01) as store:
        await store.create_session(SessionRecord.from_pipeline("s", "s", PIPELINE))
        reverted: list[frozenset[str]] = []
        before: list[dict[str, Any]] = []

        def listener(ids: frozenset[str], was: Mapping[str, Any]) -> None:
            reverted.append(ids)
            before.append(dict(was))

        store.add_revert_listener(listener)
        filler = fill(tiny_state_dir)
        with pytest.raises(StoreFull) as info:
            for index in range(1000):
                await store.set_params("s", "comp", big_params(index), wait_durable=True)
        assert "disk" in str(info.value) and "full" in str(info.value)
        assert isinstance(info.value, StoreError)
        # The mirror is what the disk holds (the refused change is not in it), and the store still runs.
        # The writer thread sends the revert, and trio's wait_all_tasks_blocked does not wait for threads:
        # the listener says when it came. (That it comes before StoreFull does is the test below.)
        await wait_until_reverted(reverted, count=1)
        on_disk = stored_params(tiny_state_dir)
        assert store.sessions()["s"].nodes["comp"].params == json.loads(on_disk[("s", "comp")])
        # Async changes queued now are refused too while the disk is full, and taken back out of the mirror.
        await store.set_params("s", "bars", {"width": 32, "height": 18}, wait_durable=False)
        with pytest.raises(StoreFull):
            await store.flush()
        await wait_until_reverted(reverted, count=2)
        assert store.sessions()["s"].nodes["bars"].params == PIPELINE["nodes"]["bars"]["params"]
        assert reverted and all(ids == {"s"} for ids in reverted)
        # What the mirror held before: the refused params, which listeners take back from whoever they told.
        assert before[-1]["s"].nodes["bars"].params == {"width": 32, "height": 18}
        filler.unlink()
        final = big_params(99_999)
        await store.set_params("s", "comp", final, wait_durable=True)
        await store.set_params("s", "bars", {"width": 32, "height": 18}, wait_durable=True)
    async with open_store(tiny_state_dir) as store:
        assert store.sessions()["s"].nodes["comp"].params == final
        assert store.sessions()["s"].nodes["bars"].params == {"width": 32, "height": 18}


async def wait_until_reverted(reverted: list[frozenset[str]], *, count: int, timeout: float = 10.0) -> None:
    """Until the store has reverted its mirror ``count`` times in all (its revert listener appends to ``reverted``)."""
    with trio.fail_after(timeout):
        while len(reverted) < count:
            await trio.sleep(0.01)


async def test_a_refused_change_is_out_of_the_mirror_before_its_caller_hears_of_it(
    tiny_state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_sessions = store_module.load_sessions

    def slow_load_sessions(conn: sqlite3.Connection) -> dict[str, SessionRecord]:
        time.sleep(0.3)  # widens the window between the refusal and the reloaded mirror
        return load_sessions(conn)

    monkeypatch.setattr(store_module, "load_sessions", slow_load_sessions)
    async with open_store(tiny_state_dir, commit_interval=0.01) as store:
        await store.create_session(SessionRecord.from_pipeline("s", "s", PIPELINE))
        fill(tiny_state_dir)
        with pytest.raises(StoreFull):
            for index in range(1000):
                await store.set_params("s", "comp", big_params(index), wait_durable=True)
        assert store.sessions()["s"].nodes["comp"].params == json.loads(stored_params(tiny_state_dir)[("s", "comp")])
