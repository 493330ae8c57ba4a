"""The compositor_pipeline benchmark's encoder (perf/vp9_encoder.py) and its output check (verify_webm).

No timings: these check that what the benchmark times is real work with a correct result.
"""

from __future__ import annotations

import io
import itertools
import os
import threading

import av
import numpy as np
import pytest

from compositord.perf import scenario_pipeline, sources
from compositord.perf.vp9_encoder import EncoderFailed, EncoderThread, Vp9Settings, nv12_to_yuv420p_frame

SMALL = Vp9Settings(320, 192)


def moving_square_nv12(width: int, height: int, index: int) -> np.ndarray:
    """A grey ramp with a bright square whose place depends on ``index``: each frame differs."""
    luma = np.tile(np.linspace(16, 235, width, dtype=np.float32), (height, 1)).astype(np.uint8)
    x, y = (index * 17) % (width - 48), (index * 11) % (height - 48)
    luma[y : y + 48, x : x + 48] = 235
    chroma = np.full((height // 2, width // 2, 2), 128, np.uint8)
    chroma[y // 2 : (y + 48) // 2, x // 2 : (x + 48) // 2] = (90, 200)
    return np.concatenate([luma.ravel(), chroma.ravel()])


def decoded_yuv420p(webm: bytes) -> list[np.ndarray]:
    with av.open(io.BytesIO(webm), "r") as container:
        return [frame.to_ndarray(format="yuv420p") for frame in container.decode(video=0)]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0.0 else 10.0 * float(np.log10(255.0**2 / mse))


def test_every_frame_comes_back_in_order_through_two_sessions_of_one_thread() -> None:
    # The encoder fills two frames in turn; a frame reused while libvpx still read it would
    # show another frame's square here.
    inputs = [moving_square_nv12(SMALL.width, SMALL.height, index) for index in range(12)]
    with EncoderThread(SMALL) as encoder:
        for _ in range(2):
            encoder.begin()
            for nv12 in inputs:
                encoder.put(nv12.tobytes())
            webm = encoder.finish()
            assert encoder.packets == len(inputs)
            decoded = decoded_yuv420p(webm)
            assert len(decoded) == len(inputs)
            for index, (got, nv12) in enumerate(zip(decoded, inputs, strict=False)):
                want = nv12_to_yuv420p_frame(nv12, SMALL.width, SMALL.height).to_ndarray()
                assert psnr(got, want) > 30.0, f"frame {index}"
                others = [
                    psnr(got, nv12_to_yuv420p_frame(other, SMALL.width, SMALL.height).to_ndarray())
                    for other in inputs
                    if other is not nv12
                ]
                assert psnr(got, want) > max(others)  # it is this frame, not a neighbour


def test_a_frame_of_the_wrong_size_is_refused_and_the_encoder_goes_on() -> None:
    good = moving_square_nv12(SMALL.width, SMALL.height, 0).tobytes()
    with EncoderThread(SMALL) as encoder:
        encoder.begin()
        encoder.put(good)
        with pytest.raises(ValueError, match=r"nv12 frame: 100 bytes, expected 92160 \(320x192\)"):
            encoder.put(bytes(100))
        encoder.put(good)
        assert len(decoded_yuv420p(encoder.finish())) == 2


def test_put_waits_while_queue_frames_frames_are_not_yet_converted(monkeypatch: pytest.MonkeyPatch) -> None:
    from compositord.perf import vp9_encoder

    converting = threading.Event()
    release = threading.Event()
    convert = vp9_encoder.Vp9Session.convert

    def held_convert(self: vp9_encoder.Vp9Session, nv12: object) -> object:
        converting.set()
        release.wait(10)
        return convert(self, nv12)

    monkeypatch.setattr(vp9_encoder.Vp9Session, "convert", held_convert)
    frame = moving_square_nv12(SMALL.width, SMALL.height, 0).tobytes()
    with EncoderThread(SMALL, queue_frames=2) as encoder:
        encoder.begin()
        encoder.put(frame)
        encoder.put(frame)  # two places: both taken, the first frame held inside its conversion
        assert converting.wait(10)
        third = threading.Thread(target=encoder.put, args=(frame,))
        third.start()
        third.join(0.3)
        assert third.is_alive()  # no place until a conversion is done
        release.set()
        third.join(10)
        assert not third.is_alive()
        assert len(decoded_yuv420p(encoder.finish())) == 3


def test_an_encoder_failure_is_reported_at_finish_and_the_next_session_starts_clean() -> None:
    bad = Vp9Settings(SMALL.width, SMALL.height, options={"deadline": "not-a-deadline"})
    with EncoderThread(bad) as encoder:
        encoder.begin()
        encoder.put(moving_square_nv12(bad.width, bad.height, 0).tobytes())
        with pytest.raises(EncoderFailed, match="avcodec_open2"):
            encoder.finish()
        encoder.begin()  # the same settings fail again, and say so again (no stale result, no hang)
        with pytest.raises(EncoderFailed, match="avcodec_open2"):
            encoder.finish()


def test_the_ffmpeg_peer_gets_the_encoder_settings_we_use() -> None:
    argv = scenario_pipeline._ffmpeg("bg.nv12", "pip.nv12").command(300)
    settings = scenario_pipeline.SETTINGS

    def after(flag: str) -> str:  # the last one: the output's options come after the inputs'
        return argv[len(argv) - 1 - argv[::-1].index(flag) + 1]

    assert after("-c:v") == "libvpx-vp9"
    assert {name: after(f"-{name}") for name in settings.options} == {"deadline": "realtime", "cpu-used": "8", "row-mt": "1"}
    assert (after("-threads"), after("-b:v"), after("-g"), after("-pix_fmt")) == ("2", "2000000", "120", "yuv420p")
    assert after("-frames:v") == "300" and after("-f") == "webm"


def test_the_aac_variant_gives_ffmpeg_a_tone_and_the_same_audio_encoder() -> None:
    argv = scenario_pipeline._ffmpeg("bg.nv12", "pip.nv12", scenario_pipeline.SETTINGS_AAC).command(300)
    audio = scenario_pipeline.SETTINGS_AAC.audio
    assert audio is not None
    assert "sine=frequency=1000:sample_rate=48000:duration=10.000000" in argv
    assert argv[argv.index("-c:a") + 1] == audio.codec == "aac" and argv[argv.index("-b:a") + 1] == "128k"
    assert argv[argv.index("-ac") + 1] == "2" and argv[argv.index("-f", argv.index("-c:v")) + 1] == "matroska"


def test_tone_blocks_are_contiguous_and_continuous() -> None:
    assert scenario_pipeline.SETTINGS_AAC.audio is not None
    tone = scenario_pipeline.ToneBlocks(scenario_pipeline.SETTINGS_AAC.audio, 30)
    blocks = [tone.block(index) for index in range(61)]
    assert all(b.start_sample == a.end_sample for a, b in itertools.pairwise(blocks))
    joined = np.concatenate([block.samples[:, 0] for block in blocks])
    expected = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(len(joined)) / 48_000)
    assert np.allclose(joined, expected, atol=1e-5)  # no seam where a block wraps to the table's start


# -- verify_webm: the scenario's check of its own output ------------------------------------------


def composite_nv12(with_pip: bool) -> np.ndarray:
    """The scenario's background bars, with a flat picture-in-picture box pasted where auto-PiP puts it."""
    width, height = scenario_pipeline.WIDTH, scenario_pipeline.HEIGHT
    nv12 = sources.rgba_to_nv12(sources.rgba_cycle(width, height, count=1)[0]).copy()
    if with_pip:
        x, y, w, h = scenario_pipeline._pip_box()
        luma = nv12[: width * height].reshape(height, width)
        chroma = nv12[width * height :].reshape(height // 2, width // 2, 2)
        luma[y : y + h, x : x + w] = 60
        chroma[y // 2 : (y + h) // 2, x // 2 : (x + w) // 2] = (200, 60)
    return nv12


@pytest.fixture(scope="module")
def composited_webm() -> tuple[bytes, np.ndarray]:
    frame = composite_nv12(with_pip=True)
    with EncoderThread(scenario_pipeline.SETTINGS) as encoder:
        encoder.begin()
        for _ in range(6):
            encoder.put(frame.tobytes())
        return encoder.finish(), frame


def test_verify_webm_accepts_the_frames_that_were_encoded(composited_webm: tuple[bytes, np.ndarray]) -> None:
    webm, frame = composited_webm
    figures = scenario_pipeline.verify_webm(webm, 6, {0: frame, 5: frame}, scenario_pipeline._pip_box())
    assert figures["decoded_frames"] == 6 and figures["compared_frames"] == 2
    assert figures["psnr_db_min"] >= scenario_pipeline.MIN_PSNR_DB and figures["pip_psnr_db_min"] >= scenario_pipeline.MIN_PSNR_DB


def test_verify_webm_catches_a_missing_picture_in_picture(composited_webm: tuple[bytes, np.ndarray]) -> None:
    webm, _ = composited_webm
    without_pip = composite_nv12(with_pip=False)
    with pytest.raises(scenario_pipeline.VerificationFailed, match=r"picture-in-picture box"):
        scenario_pipeline.verify_webm(webm, 6, {5: without_pip}, scenario_pipeline._pip_box())


def test_verify_webm_catches_a_wrong_frame_count(composited_webm: tuple[bytes, np.ndarray]) -> None:
    webm, frame = composited_webm
    with pytest.raises(scenario_pipeline.VerificationFailed, match="holds 6 frames, expected 7"):
        scenario_pipeline.verify_webm(webm, 7, {0: frame}, scenario_pipeline._pip_box())


# -- OurPipeline: our side in a process of its own, for llvmpipe's thread count --------------------


def small_cycles() -> tuple[list[np.ndarray], list[np.ndarray]]:
    width, height = scenario_pipeline.WIDTH, scenario_pipeline.HEIGHT
    pip_w, pip_h = scenario_pipeline.PIP_W, scenario_pipeline.PIP_H
    return (
        [sources.rgba_to_nv12(f) for f in sources.rgba_cycle(width, height, count=2)],
        [sources.rgba_to_nv12(f) for f in sources.rgba_cycle(pip_w, pip_h, pattern="ramp", count=2)],
    )


@pytest.mark.parametrize(("environment", "threads"), [(None, scenario_pipeline.LLVMPIPE_THREADS), ("1", 1)])
def test_our_pipeline_process_uses_its_llvmpipe_threads_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch, environment: str | None, threads: int
) -> None:
    if environment is None:
        monkeypatch.delenv("LP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("LP_NUM_THREADS", environment)
    lines: list[str] = []
    bg_cycle, pip_cycle = small_cycles()
    with scenario_pipeline.OurPipeline(bg_cycle, pip_cycle, profile_frames=2, say=lambda *text: lines.extend(text)) as pipeline:
        assert pipeline.llvmpipe_threads == threads  # counted in the child's /proc/self/task
        base = os.getpriority(os.PRIO_PROCESS, 0)  # the child starts at ours
        assert pipeline.thread_nice == {
            "MainThread": min(19, base + scenario_pipeline.COMPOSITING_NICE),
            "bench-vp9-encoder": base,
        }
        wall, size, verified = pipeline.iteration(3, verify=True)
    assert wall > 0 and size > 0
    assert verified is not None and verified["decoded_frames"] == 3 and verified["compared_frames"] == 3
    assert any("per-frame breakdown" in line for line in lines)  # the child's printout reaches the parent
    assert pipeline.profile_rows  # and so do its figures


def test_a_failure_in_our_pipeline_process_is_raised_with_its_traceback() -> None:
    _, pip_cycle = small_cycles()
    with pytest.raises(RuntimeError, match=r"our compositor_pipeline process failed:\n(.|\n)*Traceback"):
        scenario_pipeline.OurPipeline([np.zeros(10, np.uint8)], pip_cycle, profile_frames=None, say=print)
