"""The daemon's processes exempt their start-up objects from the garbage collector's full passes."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_full_collections_after_freezing_walk_only_new_objects() -> None:
    # In a fresh interpreter: freezing is process-wide and must not touch the test runner's heap.
    probe = textwrap.dedent(
        """
        import gc, time
        import compositord.daemon.engine.process  # NumPy, PyAV, Pillow, moderngl and the engine
        tracked_before = len(gc.get_objects())
        from compositord.daemon.heap import freeze_startup_objects
        freeze_startup_objects()
        leftovers = [[index] for index in range(1000)]  # what a session would make afterwards
        print(tracked_before, gc.get_freeze_count(), len(gc.get_objects()))
        """
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    tracked_before, frozen, tracked_after = map(int, result.stdout.split())
    assert tracked_before > 20_000  # the engine's imports: what a full pass walked before
    assert frozen >= tracked_before * 0.9
    # What a full pass still walks: objects made after the freeze (the 1000 lists and their container), few else.
    assert 1000 <= tracked_after < 3000
