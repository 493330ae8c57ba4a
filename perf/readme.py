"""The results block of perf/README.md, made from one run of ``compositord bench all``.

Only the text between ``<!-- results:begin -->`` and ``<!-- results:end -->``
is replaced; the analysis around it is written by hand.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

BEGIN = "<!-- results:begin -->"
END = "<!-- results:end -->"

TARGET_ONLY_VS_GST = 1.5
TARGET_ONLY_VS_FFMPEG = 3.0
TARGET_PIPELINE_VS_FFMPEG = 1.0


def environment(lp_threads: int | None) -> dict[str, str]:
    info = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": _cpu_model(),
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        # The machine is shared: how busy it was says how much the absolute figures mean.
        "load average (1, 5, 15 min) when the run ended": ", ".join(f"{value:.2f}" for value in os.getloadavg()),
        "LP_NUM_THREADS": os.environ.get("LP_NUM_THREADS", "unset (llvmpipe default)") if lp_threads is None else str(lp_threads),
    }
    try:
        from compositord.daemon.engine.render.gl_context import create_context

        ctx = create_context()
        info["gl"] = f"{ctx.info.get('GL_RENDERER', '?')} / {ctx.info.get('GL_VERSION', '?')}"
        ctx.release()
    except Exception as exc:  # the bench ran, so this is unlikely; say so rather than fail the write
        info["gl"] = f"unknown ({exc})"
    from compositord.perf import peers

    info["ffmpeg"] = peers.ffmpeg_version() if peers.have_ffmpeg() else "not installed"
    info["gstreamer"] = peers.gstreamer_version() if peers.have_gstreamer() is None else "not installed"
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def block(results: dict[str, dict[str, Any]], env: dict[str, str], command: str) -> str:
    out = [BEGIN, "", f"Produced by `{command}` on {env['date']}.", ""]
    out += ["| machine | |", "| --- | --- |"]
    out += [f"| {key} | {value} |" for key, value in env.items() if key != "date"]
    out += ["", "### Targets (ratios of fps in the same run, median of the per-repetition ratios)", ""]
    out += ["| target | measured | verdict |", "| --- | --- | --- |"]
    only = results.get("compositor_only", {})
    pipe = results.get("compositor_pipeline", {})
    lat = results.get("control_latency", {})
    for peer, goal in (("gstreamer", TARGET_ONLY_VS_GST), ("ffmpeg", TARGET_ONLY_VS_FFMPEG)):
        ratios = only.get("peers", {}).get(peer, {}).get("ratio_per_rep", [])
        if ratios:
            ratio = _median(ratios)
            short = "" if ratio >= goal else f" ({100 * (1 - ratio / goal):.0f} % short)"
            out.append(
                f"| compositor_only >= {goal}x {peer} | {ratio:.2f}x (per repetition {ratios}){short} | {_verdict(ratio >= goal)} |"
            )
        else:
            out.append(f"| compositor_only >= {goal}x {peer} | not run (peer missing or no --compare) | - |")
    ratios = pipe.get("peers", {}).get("ffmpeg", {}).get("ratio_per_rep", [])
    if ratios:
        ratio = _median(ratios)
        short = "" if ratio >= TARGET_PIPELINE_VS_FFMPEG else f" ({100 * (1 - ratio / TARGET_PIPELINE_VS_FFMPEG):.0f} % short)"
        out.append(
            f"| compositor_pipeline >= 1.0x ffmpeg | {ratio:.2f}x (per repetition {ratios}){short} | {_verdict(ratio >= 1.0)} |"
        )
    for row in lat.get("rows", []):
        if (row["clients"], row["editing"]) == (100, 10):
            p99 = row["b_view_ack_ms"].get("p99")
            ok = (
                p99 is not None
                and p99 <= row["b_p99_target_ms"]
                and row["frames_dropped_under_load"] <= row["frames_dropped_idle"]
            )
            out.append(
                f"| control_latency (100, 10): (b) p99 <= {row['b_p99_target_ms']} ms, no frame dropped for control traffic | "
                f"p99 {p99} ms; dropped {row['frames_dropped_under_load']} under load ({row['frames_dropped_idle']} idle) | {_verdict(ok)} |"
            )
    for name, label in (("compositor_only", "compositor_only"), ("compositor_pipeline", "compositor_pipeline")):
        result = results.get(name)
        if not result:
            continue
        out += ["", f"### {label}", "", "| run | fps | ms/frame | wall mean (min..max, σ) s |", "| --- | --- | --- | --- |"]
        ours = result["ours"]
        ours_label = "compositord" + (f" (start-up {ours['startup_s']:.3f} s subtracted)" if ours.get("startup_s") else "")
        rows = [(ours_label, ours)] + [
            (f"{peer} (start-up {r['startup_s']:.3f} s subtracted)", r) for peer, r in result.get("peers", {}).items()
        ]
        for label_, r in rows:
            out.append(
                f"| {label_} | {r['fps']:.1f} | {r['ms_per_frame']:.2f} | {r['wall_mean_s']:.3f} ({r['wall_min_s']:.3f}..{r['wall_max_s']:.3f}, {r['wall_stdev_s']:.4f}) |"
            )
        if result.get("profile"):
            profile = result["profile"]
            out += [
                "",
                f"Per-frame breakdown (cProfile over {profile['frames']} frames, ms/frame, profiler overhead included):",
                "",
            ]
            out += ["| where | ms/frame |", "| --- | --- |"]
            ordered = sorted(profile["ms_per_frame"].items(), key=lambda item: -item[1])
            out += [f"| {label_} | {ms:.3f} |" for label_, ms in ordered if ms >= 0.005]
            out.append(f"| total | {profile['total_ms_per_frame']:.3f} |")
    if lat.get("rows"):
        out += ["", f"### control_latency (daemon at {lat['fps']} fps; ms; p50 / p99 / max)", ""]
        out += [
            "Percentiles are over the tunes acknowledged (n); after the edits the run waits up to 30 s for the"
            " last acks, and those still missing then had waited longer still, so where n < tunes the true p99 is higher.",
            "",
        ]
        out += [
            "| (clients, editing) engines | tunes/s | (a) params ack | (b) view ack | missing (a) / (b) | (c) on screen | shown / overtaken | frame interval | frame end -> view read | dropped load (idle) | render ms p99 per s | CPU cores daemon + engines / editors / watchers |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for row in lat["rows"]:

            def f(p: dict[str, Any]) -> str:
                return "n/a" if not p.get("count") else f"{p['p50']:.1f} / {p['p99']:.1f} / {p['max']:.1f}"

            out.append(
                f"| ({row['clients']}, {row['editing']}) {row.get('engine_mode', 'thread')} | {row['tunes_per_second']} | {f(row['a_params_ack_ms'])} | {f(row['b_view_ack_ms'])} | "
                f"{row['params_acks_missing']} / {row['view_acks_missing']} | "
                f"{f(row['c_frame_shown_ms'])} | {row['c_frame_shown_ms'].get('count', 0)} / {row['tunes_never_shown']} | {f(row['frame_interval_ms'])} | "
                f"{f(row['view_delivery_ms'])} | {row['frames_dropped_under_load']} ({row['frames_dropped_idle']}) | "
                f"{max((v for v in row['render_ms_p99'] if v is not None), default='n/a')} | {row['cpu_cores_daemon']} + {row.get('cpu_cores_engines', 0.0)} / {row['cpu_cores_clients']} / {row.get('cpu_cores_watchers', 0.0)} |"
            )
        for item in lat.get("summary", []):
            out.append(
                f"\n({item['clients']}, {item['editing']}) {item['engine_mode']}: view-ack p99 per run {item['view_ack_p99_ms']} ms; "
                f"{item['runs_meeting_target_without_drops']}/{item['runs']} runs within {item['target_ms']} ms without drops."
            )
    sessions = results.get("sessions")
    if sessions:
        out += [
            "",
            f"### sessions ({sessions['seconds']:g} s per N; per session or pipeline: dropped / rendered, render p99 ms, CPU cores)",
            "",
        ]
        out += ["| N | compositord | GStreamer |", "| --- | --- | --- |"]
        for row in sessions["rows"]:
            ours = "; ".join(
                f"{r.get('frames_dropped')} / {r.get('frames_rendered')}, {r.get('render_ms_p99')} ms, {r.get('cpu_cores')}"
                for r in row["ours"]["sessions"]
            )
            theirs = "; ".join(
                f"{r.get('frames_dropped')} / {r.get('frames_rendered')}, {r.get('cpu_cores')}"
                for r in row.get("gstreamer", {}).get("pipelines", [])
            )
            out.append(f"| {row['sessions']} | {ours} (control {row['ours']['control_cpu_cores']}) | {theirs or 'not run'} |")
        summary = sessions["summary"]
        out.append(
            f"\nSustained without a dropped frame: compositord {summary['ours_max_sustained_strict']}, "
            f"GStreamer {summary['gstreamer_max_sustained_strict']} (1 % tolerance: {summary['ours_max_sustained_1pct']} / "
            f"{summary['gstreamer_max_sustained_1pct']})."
        )
    scaling = results.get("scaling")
    if scaling:
        from compositord.perf.scenario_scaling import table

        out += ["", "### scaling (ms per frame, mean; peak RSS of the process)", "", table(scaling["rows"])]
        if scaling.get("scene_rows"):
            from compositord.perf.scenario_scaling import SCENE_LAYERS, scene_table

            out += ["", f"### scaling: scenes at {SCENE_LAYERS} layers (wall / CPU ms per frame, mean; CPU x the one scene)", ""]
            out.append(scene_table(scaling["scene_rows"]))
    out += ["", END]
    return "\n".join(out)


def rewrite(path: Path, results: dict[str, dict[str, Any]], env: dict[str, str], command: str) -> None:
    text = path.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise ValueError(f"{path}: no {BEGIN} ... {END} block to replace")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(head + block(results, env, command) + tail, encoding="utf-8")
