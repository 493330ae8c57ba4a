"""Smoke tests of ``compositord bench``: every scenario finishes a tiny run and prints its BENCH line.

These are not measurements and assert no timings: the benchmark's targets are
checked by running it (perf/README.md), never in CI.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from compositord import cli
from compositord.cli.bench import load_results
from compositord.perf.measure import Timing, percentiles, ratios

THROUGHPUT_KEYS = {
    "frames",
    "iterations",
    "wall_s",
    "wall_mean_s",
    "wall_min_s",
    "wall_max_s",
    "wall_stdev_s",
    "fps",
    "ms_per_frame",
}


def run_bench(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = cli.main(["bench", *argv])
    return code, capsys.readouterr().out


def run_bench_err(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = cli.main(["bench", *argv])
    return code, capsys.readouterr().err


def test_compositor_only_quick(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_bench(capsys, "compositor_only", "--quick", "--frames", "3")
    assert code == 0
    record = load_results(out)["compositor_only"]
    assert set(record["ours"]) >= THROUGHPUT_KEYS
    assert record["ours"]["frames"] == 3 and len(record["ours"]["wall_s"]) == 1
    assert record["ours"]["fps"] > 0
    assert "wall-clock   :" in out and "throughput   :" in out and "per-frame    :" in out


def test_mixer_quick(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_bench(capsys, "mixer", "--quick", "--frames", "20", "--seconds", "1.5")
    assert code == 0
    record = load_results(out)["mixer"]
    assert set(record["ours"]) == {"30fps-48k-stereo", "30fps-44k1-stereo", "60fps-48k-mono", "30fps-48k-ramps"}
    for config in record["ours"].values():
        assert set(config) >= THROUGHPUT_KEYS and config["frames"] == 20 and config["inputs"] == 8
        assert config["per_frame_us"]["count"] == 20 and config["per_frame_us"]["p50"] > 0
    in_loop = record["in_loop"]
    assert in_loop["frames_rendered"] > 0 and in_loop["audio_mix_ms_p50"] and in_loop["audio_mix_ms_p50"][0] > 0


def test_compositor_pipeline_quick_encodes_webm(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_bench(capsys, "compositor_pipeline", "--quick", "--frames", "4", "--iterations", "2")
    assert code == 0
    record = load_results(out)["compositor_pipeline"]
    assert set(record["ours"]) >= THROUGHPUT_KEYS
    assert len(record["ours"]["wall_s"]) == 2
    assert all(size > 0 for size in record["ours"]["webm_bytes"])  # something was really encoded
    assert record["ours"]["verified"]["decoded_frames"] == 4  # and it decodes to the composited frames


def test_compositor_pipeline_aac_quick_encodes_sound_beside_the_video(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_bench(capsys, "compositor_pipeline_aac", "--quick", "--frames", "45", "--iterations", "1")
    assert code == 0
    verified = load_results(out)["compositor_pipeline_aac"]["ours"]["verified"]
    assert verified["decoded_frames"] == 45
    assert abs(verified["audio_seconds"] - 1.5) < 1 / 30 and verified["tone_hz"] == pytest.approx(1000, abs=20)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed: --compare has no peer to run")
def test_compare_with_ffmpeg_gives_a_ratio_per_repetition(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_bench(
        capsys, "compositor_pipeline", "--frames", "3", "--iterations", "2", "--compare", "--no-startup-correction"
    )
    assert code == 0
    peer = load_results(out)["compositor_pipeline"]["peers"]["ffmpeg"]
    assert len(peer["ratio_per_rep"]) == 2 and all(r > 0 for r in peer["ratio_per_rep"])
    assert "ratio compositord/ffmpeg fps per repetition" in out


def test_control_latency_quick(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    tune_log = tmp_path / "tunes.jsonl"
    code, out = run_bench(capsys, "control_latency", "--quick", "--watchers-nice", "3", "--tune-log", str(tune_log))
    assert code == 0
    record = load_results(out)["control_latency"]
    rows = {(row["clients"], row["editing"]): row for row in record["rows"]}
    assert set(rows) == {(1, 1), (10, 5)}
    # --tune-log: one line per tune sent, each acknowledged on both channels after it was sent.
    logged = [json.loads(line) for line in tune_log.read_text().splitlines()]
    assert len(logged) == sum(row["tunes_sent"] for row in rows.values())
    assert all(line["sent"] < line["params_ack"] and line["sent"] < line["view_ack"] for line in logged)
    # The editors run the client library's stamps and masking in a process of their own (perf/latency_editors.py).
    assert all(row["editors"] == "raw" and row["cpu_cores_clients"] > 0 for row in rows.values())
    # The five watchers run in their own process (perf/latency_watchers.py) and read every event too.
    assert rows[(10, 5)]["watchers_connected"] == 5
    assert rows[(10, 5)]["watchers_niceness"] == min(19, os.nice(0) + 3)  # --watchers-nice reached their process
    # As a service is started: the daemon in a session (and so a scheduler autogroup) of its own.
    assert all(row["daemon_session"] == "own" and row["daemon_own_session"] for row in rows.values())
    assert rows[(10, 5)]["watchers_events_read"] >= 5 * rows[(10, 5)]["frames_in_window"] // 2
    for row in rows.values():
        assert row["tunes_sent"] > 0
        for key in ("a_params_ack_ms", "b_view_ack_ms", "c_frame_shown_ms", "frame_interval_ms"):
            assert {"p50", "p99", "max", "count"} <= set(row[key])
        # Every tune is acknowledged on both channels and the probe saw frames.
        assert row["params_acks_missing"] == 0 and row["view_acks_missing"] == 0
        assert row["a_params_ack_ms"]["count"] == row["tunes_sent"]
        assert row["c_frame_shown_ms"]["count"] > 0
        assert row["frames_in_window"] > 0
        # Dropped frames are the render loop's own count, read from its stats before and after the edits.
        assert row["frames_dropped_counted_by"] == "render loop" and row["frames_dropped_under_load"] >= 0
        # So are the drops without load it is compared with: two stats read while the first client was alone.
        assert row["frames_dropped_idle_counted_by"] == "render loop" and row["frames_dropped_idle"] >= 0
        assert 0.8 <= row["idle_seconds"] <= 1.5
        assert row["host_steal_seconds"] is not None and row["host_steal_seconds"] >= 0  # Linux says, VM or not


def test_scaling_quick(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_bench(capsys, "scaling", "--quick", "--frames", "2")
    assert code == 0
    rows = load_results(out)["scaling"]["rows"]
    assert {(row["layers"], row["size"]) for row in rows} == {(1, "720p"), (4, "720p")}
    assert all(row["peak_rss_mib"] > 0 and row["ms_per_frame_mean"] > 0 for row in rows)
    assert "| 720p |" in out
    scene_rows = load_results(out)["scaling"]["scene_rows"]
    assert {(row["mode"], row["size"], row["layers"]) for row in scene_rows} == {
        (mode, "720p", 4) for mode in ("scene", "fade", "push", "nested")
    }
    assert all(row["ms_per_frame_mean"] > 0 for row in scene_rows)
    assert "| output | one scene | fade frame | push frame | nested (flat: one scene) |" in out


def test_write_readme_replaces_only_the_results_block(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# hand-written\n\n<!-- results:begin -->\nold\n<!-- results:end -->\n\nanalysis stays\n", encoding="utf-8")
    code, _out = run_bench(capsys, "compositor_only", "--quick", "--frames", "2", "--write-readme", str(readme))
    assert code == 0
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("# hand-written\n") and text.endswith("analysis stays\n")
    assert "old" not in text and "### compositor_only" in text and "| compositord |" in text


def test_bad_arguments_are_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, err = run_bench_err(capsys, "scaling", "--frames", "0")
    assert code == 2 and "--frames must be at least 1" in err
    code, err = run_bench_err(capsys, "scaling", "--write-readme", str(tmp_path / "missing.md"))
    assert code == 2 and "missing.md: no such file" in err


def test_nv12_to_yuv420p_matches_libswscale() -> None:
    import av
    import numpy as np

    from compositord.perf import scenario_pipeline, sources

    nv12 = sources.rgba_to_nv12(sources.rgba_cycle(scenario_pipeline.WIDTH, scenario_pipeline.HEIGHT, count=1)[0])
    ours = scenario_pipeline.nv12_to_yuv420p_frame(nv12).to_ndarray()
    reference = (
        av.VideoFrame.from_ndarray(nv12.reshape(-1, scenario_pipeline.WIDTH), format="nv12")
        .reformat(format="yuv420p")
        .to_ndarray()
    )
    assert np.array_equal(ours, reference)
    assert len(np.unique(ours[scenario_pipeline.HEIGHT :])) > 2  # the chroma rows carry the bars, not a constant


def test_a_failing_peer_is_left_out_with_a_note_and_the_others_run() -> None:
    from compositord.perf.peers import Peer, PeerRuns

    notes: list[str] = []
    runs = PeerRuns(
        [
            Peer("broken", lambda frames: [sys.executable, "-c", "import sys; sys.exit(3)"]),
            Peer("fine", lambda frames: [sys.executable, "-c", "pass"]),
        ],
        10,
        startup_correction=False,
        notes=notes,
    )
    runs.run_once()
    runs.run_once()
    assert list(runs.finished()) == ["fine"] and len(runs.finished()["fine"].walls) == 2
    assert len(notes) == 1 and notes[0].startswith("broken left out: broken exited 3")


def test_soak_is_reached_through_bench_and_checks_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_bench_err(capsys, "soak", "--minutes", "0")
    assert code == 2 and "--minutes and --interval must be positive" in err


def test_summary_and_ratio_arithmetic() -> None:
    ours = Timing("a", 100, [1.0, 2.0])
    peer = Timing("b", 100, [2.0, 2.0])
    assert ours.fps == pytest.approx(100 / 1.5)
    assert ours.ms_per_frame == pytest.approx(15.0)
    assert ours.stdev == pytest.approx(0.7071, abs=1e-4)
    assert ratios(ours, peer) == [2.0, 1.0]
    assert "min=1.000s  max=2.000s  σ=0.7071s" in ours.summary()
    assert percentiles([5.0, 1.0, 3.0, 2.0, 4.0]) == {"p50": 3.0, "p99": 5.0, "max": 5.0, "count": 5}
    assert percentiles([])["count"] == 0


@pytest.mark.gl
@pytest.mark.slow
def test_panel_preview_quick(capsys: pytest.CaptureFixture[str]) -> None:
    from compositord.testing.browser import missing_browser

    reason = missing_browser()
    if reason is not None:
        pytest.skip(f"no browser to drive: {reason}")
    code, out = run_bench(capsys, "panel_preview", "--quick", "--seconds", "1")
    assert code == 0
    record = load_results(out)["panel_preview"]
    assert (record["preview"]["width"], record["preview"]["height"]) == (640, 360)
    for phase in ("idle", "editing_60hz"):
        assert record[phase]["frames_shown"] > 0 and record[phase]["latency_ms"]["count"] > 0, phase
    assert record["console_errors"] == []


def test_sessions_quick(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_bench(capsys, "sessions", "--quick", "--seconds", "1.5")
    assert code == 0
    record = load_results(out)["sessions"]
    (row,) = record["rows"]
    assert row["sessions"] == 1
    (session,) = row["ours"]["sessions"]
    assert "error" not in session, session
    # One engine process rendered about 30 frames a second over the window, and its CPU was measured.
    assert session["frames_rendered"] > 0 and session["frames_due"] >= 30
    assert session["cpu_cores"] > 0 and session["render_ms_p99"] > 0
    assert set(record["summary"]) >= {"ours_max_sustained_strict", "gstreamer_max_sustained_strict"}


def test_control_latency_can_run_both_engine_modes(capsys: pytest.CaptureFixture[str]) -> None:
    from compositord.perf.scenario_latency import summarize

    rows = [
        {"clients": 1, "editing": 1, "engine_mode": mode, "b_view_ack_ms": {"p99": p99}, "b_p99_target_ms": 33.33}
        | {"frames_dropped_under_load": dropped, "frames_dropped_idle": 0}
        for mode, p99, dropped in (("process", 20.0, 0), ("process", 40.0, 0), ("thread", 20.0, 2))
    ]
    summary = {item["engine_mode"]: item for item in summarize(rows)}
    assert summary["process"]["view_ack_p99_ms"] == [20.0, 40.0] and summary["process"]["runs_meeting_target_without_drops"] == 1
    assert summary["thread"]["runs_meeting_target"] == 1 and summary["thread"]["runs_meeting_target_without_drops"] == 0


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("ffmpeg") is None, reason="no ffmpeg command: the ingest scenario makes its clip and sends its stream with it"
)
def test_ingest_quick_measures_every_input(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_bench(capsys, "ingest", "--quick", "--seconds", "0.5")
    assert code == 0
    record = load_results(out)["ingest"]
    expected = {"file", "file_no_audio", "stream_in"} | ({"capture"} if shutil.which("Xvfb") else set())
    assert set(record["cases"]) == expected
    for name, case in record["cases"].items():
        assert case["frames"] > 0 and case["cpu_ms_per_frame"] is not None, name
    assert record["cases"]["file"]["sound"] and not record["cases"]["file_no_audio"]["sound"]
    assert record["cases"]["stream_in"]["sound"]


def test_control_latency_can_keep_the_daemon_and_the_editors_in_the_bench_session() -> None:
    from compositord.perf.scenario_latency import run_config

    row = run_config(1, 1, 1.0, daemon_session="shared", editors="client")
    assert row["daemon_session"] == "shared" and row["daemon_own_session"] is False
    assert row["editors"] == "client"  # the trio client library, in the bench's process
    assert row["tunes_sent"] > 0 and row["view_acks_missing"] == 0
