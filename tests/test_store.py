"""The durable store: restart restores, sync changes are committed before they
return, async changes are group-committed in time, `_` keys never reach disk."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import trio
import trio.testing

from compositord.daemon.state.model import ConnectionRecord, NodeRecord, SessionRecord
from compositord.daemon.state.store import (
    SCHEMA_VERSION,
    AddConnection,
    RemoveNode,
    SetParams,
    Store,
    StoreError,
    database_path,
    iter_stored_keys,
    open_store,
)
from compositord.protocol.errors import LocalProtocolError


def demo_session(session_id: str = "s1") -> SessionRecord:
    return SessionRecord(
        session_id=session_id,
        name="demo",
        nodes={
            "bars": NodeRecord("bars", "video::colorbars", {"width": 320, "height": 180}),
            "comp": NodeRecord("comp", "video::compositor", {"width": 320, "height": 180, "layers": {"in_0": {"opacity": 1.0}}}),
            "pip": NodeRecord("pip", "video::colorbars", {"width": 160, "height": 90}),
        },
        connections=[
            ConnectionRecord("bars", "out", "comp", "in_0"),
            ConnectionRecord("pip", "out", "comp", "in_1"),
        ],
    )


def stored_params(state_dir: Path, session_id: str, node_id: str) -> tuple[dict, int] | None:
    """What a separate connection sees: committed data only."""
    conn = sqlite3.connect(database_path(state_dir))
    try:
        row = conn.execute("SELECT params, seq FROM nodes WHERE session_id = ? AND node_id = ?", (session_id, node_id)).fetchone()
    finally:
        conn.close()
    return None if row is None else (json.loads(row[0]), row[1])


async def test_restart_restores_sessions_nodes_connections_and_params(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        await store.create_session(demo_session("s1"))
        await store.create_session(demo_session("s2"))
        await store.set_params(
            "s1", "comp", {"width": 320, "height": 180, "layers": {"in_1": {"opacity": 0.25}}}, wait_durable=True
        )
        await store.set_params("s1", "bars", {"width": 640, "height": 360}, wait_durable=False)
        await store.put_node("s1", NodeRecord("img", "video::image", {"asset_path": "logo.png"}))
        await store.add_connection("s1", ConnectionRecord("img", "out", "comp", "in_2"))
        await store.remove_connection("s1", ConnectionRecord("pip", "out", "comp", "in_1"))
        await store.destroy_session("s2")
        before = {
            sid: (s.name, s.to_pipeline(), {n: node.seq for n, node in s.nodes.items()}) for sid, s in store.sessions().items()
        }
    async with open_store(tmp_path) as store:
        after = {
            sid: (s.name, s.to_pipeline(), {n: node.seq for n, node in s.nodes.items()}) for sid, s in store.sessions().items()
        }
    assert after == before
    assert list(after) == ["s1"]
    _name, pipeline, seqs = after["s1"]
    assert pipeline["nodes"]["comp"]["params"]["layers"] == {"in_1": {"opacity": 0.25}}
    assert pipeline["nodes"]["bars"]["params"] == {"width": 640, "height": 360}  # the async change survived a clean stop
    assert seqs == {"bars": 1, "comp": 1, "pip": 0, "img": 0}
    assert pipeline["connections"] == [
        {"from_node": "bars", "from_pin": "out", "to_node": "comp", "to_pin": "in_0"},
        {"from_node": "img", "from_pin": "out", "to_node": "comp", "to_pin": "in_2"},
    ]


async def test_database_is_wal_and_schema_versioned(tmp_path: Path) -> None:
    async with open_store(tmp_path):
        pass
    conn = sqlite3.connect(database_path(tmp_path))
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
        conn.commit()
    finally:
        conn.close()
    with pytest.raises(StoreError, match="newer"):
        async with open_store(tmp_path):
            pass


async def test_sync_change_is_committed_before_it_returns_async_waits_for_group_commit(tmp_path: Path) -> None:
    # A group-commit interval of a minute: only the sync path can have committed anything.
    async with open_store(tmp_path, commit_interval=60.0) as store:
        await store.create_session(demo_session())
        seq = await store.set_params("s1", "bars", {"width": 100, "height": 50}, wait_durable=False)
        assert seq == 1
        assert store.sessions()["s1"].nodes["bars"].params == {"width": 100, "height": 50}  # the mirror at once
        assert stored_params(tmp_path, "s1", "bars") == ({"width": 320, "height": 180}, 0)  # not on disk yet
        seq = await store.set_params("s1", "pip", {"width": 80, "height": 40}, wait_durable=True)
        assert seq == 1
        assert stored_params(tmp_path, "s1", "pip") == ({"width": 80, "height": 40}, 1)
        # The sync commit carried the earlier async change with it (queue order is kept).
        assert stored_params(tmp_path, "s1", "bars") == ({"width": 100, "height": 50}, 1)
        await store.set_params("s1", "bars", {"width": 200, "height": 100}, wait_durable=False)
        await store.flush()
        assert stored_params(tmp_path, "s1", "bars") == ({"width": 200, "height": 100}, 2)


async def test_an_async_change_is_queued_without_a_schedule_point_while_the_queue_has_room(tmp_path: Path) -> None:
    # A tune holds its session's lock around set_params: a schedule point here held the lock across a
    # whole round of the scheduler for every tune (perf/README.md, control_latency with engine processes).
    async with open_store(tmp_path, commit_interval=60.0) as store:
        await store.create_session(demo_session())
        with trio.testing.assert_no_checkpoints():
            for width in range(100, 110):
                await store.set_params("s1", "bars", {"width": width, "height": 50}, wait_durable=False)
        assert store.sessions()["s1"].nodes["bars"].params == {"width": 109, "height": 50}
        await store.flush()
        assert stored_params(tmp_path, "s1", "bars") == ({"width": 109, "height": 50}, 10)


async def test_async_changes_are_group_committed_within_100_ms(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        await store.create_session(demo_session())
        commits_before = store.statistics().commits
        for width in range(1, 21):
            await store.set_params("s1", "bars", {"width": width, "height": 50}, wait_durable=False)
        queued_at = time.monotonic()
        while stored_params(tmp_path, "s1", "bars") != ({"width": 20, "height": 50}, 20):
            assert time.monotonic() - queued_at < 0.1, "async change not committed within 100 ms"
            await trio.sleep(0.002)
        # Twenty changes queued back to back share a commit or two, not twenty.
        assert store.statistics().commits - commits_before <= 3


async def test_private_keys_are_refused_at_any_depth_and_change_nothing(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        await store.create_session(demo_session())
        before = store.sessions()["s1"]
        for bad in (
            {"_sender": "x", "width": 1},
            {"layers": {"in_1": {"opacity": 0.5, "_rev": 3}}},
            {"text_overlays": [{"id": "t", "_acks": {}}]},
        ):
            with pytest.raises(LocalProtocolError, match="starts with '_'"):
                await store.set_params("s1", "comp", bad, wait_durable=True)
        with pytest.raises(LocalProtocolError):
            await store.put_node("s1", NodeRecord("x", "video::colorbars", {"deep": [{"_seq": 1}]}))
        bad_session = demo_session("s2")
        bad_session.nodes["bars"].params["_rev"] = 1
        with pytest.raises(LocalProtocolError):
            await store.create_session(bad_session)
        assert store.sessions()["s1"] is before
        assert "s2" not in store.sessions()
        await store.flush()
    keys = list(iter_stored_keys(database_path(tmp_path)))
    assert {(k.node_id, k.pointer) for k in keys} >= {("comp", "/layers/in_0/opacity"), ("bars", "/width")}
    assert not [k for k in keys if k.key.startswith("_")]


async def test_apply_atomically_is_all_or_nothing(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        await store.create_session(demo_session())
        with pytest.raises(LocalProtocolError, match="nope"):
            await store.apply_atomically(
                [SetParams("s1", "bars", {"width": 1, "height": 1}), SetParams("s1", "nope", {"width": 2})]
            )
        assert store.sessions()["s1"].nodes["bars"].seq == 0
        results = await store.apply_atomically(
            [
                SetParams("s1", "bars", {"width": 1, "height": 1}),
                SetParams("s1", "bars", {"width": 2, "height": 2}),
                RemoveNode("s1", "pip"),
                AddConnection("s1", ConnectionRecord("bars", "out", "comp", "in_1")),
            ]
        )
        assert results == [1, 2, None, None]
    async with open_store(tmp_path) as store:
        session = store.sessions()["s1"]
        assert session.nodes["bars"].params == {"width": 2, "height": 2}
        assert "pip" not in session.nodes
        # Removing a node removed its connection; the new one is there.
        assert [c.to_pin for c in session.connections] == ["in_0", "in_1"]
        assert all("pip" not in (c.from_node, c.to_node) for c in session.connections)


async def test_mirror_records_are_snapshots(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        await store.create_session(demo_session())
        held = store.sessions()["s1"]
        params = {"width": 10, "height": 10}
        await store.set_params("s1", "bars", params, wait_durable=False)
        params["width"] = 99  # the caller's dict is not the stored one
        assert held.nodes["bars"].params == {"width": 320, "height": 180}
        assert store.sessions()["s1"].nodes["bars"].params == {"width": 10, "height": 10}


async def test_full_queue_pushes_back_on_callers(tmp_path: Path) -> None:
    async with open_store(tmp_path, queue_capacity=2) as store:
        await store.create_session(demo_session())
        # Another connection holds the write lock, so the writer stalls on its first item.
        blocker = sqlite3.connect(database_path(tmp_path), isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        finished: list[int] = []
        async with trio.open_nursery() as nursery:

            async def change(width: int) -> None:
                await store.set_params("s1", "bars", {"width": width, "height": 1}, wait_durable=False)
                finished.append(width)

            for width in range(1, 7):
                nursery.start_soon(change, width)
                await trio.sleep(0.02)
            # The writer holds one item, two wait in the queue; the rest are pushed back.
            assert len(finished) == 3
            assert store.statistics().queued == 2
            blocker.execute("ROLLBACK")
            blocker.close()
        assert sorted(finished) == [1, 2, 3, 4, 5, 6]
        await store.flush()
        assert stored_params(tmp_path, "s1", "bars") == ({"width": 6, "height": 1}, 6)


_KILL_CHILD = textwrap.dedent(
    """
    import sys, trio
    from pathlib import Path
    from compositord.daemon.state.model import NodeRecord, SessionRecord
    from compositord.daemon.state.store import open_store

    async def main(state_dir, mode):
        async with open_store(Path(state_dir)) as store:
            await store.create_session(SessionRecord("s1", "k", {"a": NodeRecord("a", "video::colorbars", {"width": 1})}, []))
            await store.set_params("s1", "a", {"width": 2}, wait_durable=(mode == "sync"))
            print("returned", flush=True)
            await trio.sleep_forever()

    trio.run(main, *sys.argv[1:])
    """
)


def run_child_and_kill_9(state_dir: Path, mode: str, delay_after_return: float) -> None:
    child = subprocess.Popen([sys.executable, "-c", _KILL_CHILD, str(state_dir), mode], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "returned"
        time.sleep(delay_after_return)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_kill_9_right_after_a_sync_change_returned_keeps_it(tmp_path: Path) -> None:
    run_child_and_kill_9(tmp_path, "sync", 0.0)
    assert stored_params(tmp_path, "s1", "a") == ({"width": 2}, 1)


def test_kill_9_keeps_async_changes_older_than_100_ms(tmp_path: Path) -> None:
    run_child_and_kill_9(tmp_path, "async", 0.12)
    assert stored_params(tmp_path, "s1", "a") == ({"width": 2}, 1)


async def test_changes_before_run_are_a_clear_error(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with pytest.raises(LocalProtocolError, match="not running"):
        await store.flush()


async def test_stop_commits_what_was_queued_and_refuses_what_was_pushed_back(tmp_path: Path) -> None:
    results: dict[int, str] = {}
    store = Store(tmp_path, queue_capacity=1)
    store_scope = trio.CancelScope()

    async def run_store(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with store_scope:
            await store.run(task_status=task_status)

    async def change(width: int) -> None:
        try:
            await store.set_params("s1", "bars", {"width": width, "height": 1}, wait_durable=True)
            results[width] = "committed"
        except StoreError:
            results[width] = "refused"

    async with trio.open_nursery() as nursery:
        await nursery.start(run_store)
        await store.create_session(demo_session())
        blocker = sqlite3.connect(database_path(tmp_path), isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # the writer stalls on its next transaction
        for width in (1, 2, 3):
            nursery.start_soon(change, width)
            await trio.sleep(0.02)
        # 1 is with the writer, 2 in the queue, 3 pushed back; now the daemon stops.
        store_scope.cancel()
        await trio.sleep(0.05)
        blocker.execute("ROLLBACK")
        blocker.close()
    assert results == {1: "committed", 2: "committed", 3: "refused"}
    assert stored_params(tmp_path, "s1", "bars") == ({"width": 2, "height": 1}, 2)


async def test_a_failed_write_fails_its_callers_and_ends_run(tmp_path: Path) -> None:
    store = Store(tmp_path, busy_timeout=0.1)
    with pytest.raises(ExceptionGroup) as caught:
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            await store.create_session(demo_session())
            # Another process holds the write lock past the busy timeout: the writer gives up.
            blocker = sqlite3.connect(database_path(tmp_path), isolation_level=None)
            blocker.execute("PRAGMA busy_timeout=0")
            blocker.execute("BEGIN IMMEDIATE")
            try:
                with pytest.raises(StoreError, match="locked"):
                    await store.set_params("s1", "bars", {"width": 5}, wait_durable=True)
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()
            await trio.sleep_forever()  # run() itself ends with the error
    assert caught.group_contains(StoreError, match="writer stopped")
    with pytest.raises(LocalProtocolError, match="not running"):
        await store.flush()
