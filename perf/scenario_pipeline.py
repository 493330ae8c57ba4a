"""compositor_pipeline (the reference pull request's benchmark): a colorbars background (NV12, full size)
and a colorbars picture-in-picture (NV12, half size, auto-PiP: a third of the canvas, 20 px from the
bottom-right corner), composited at 1280x720 to NV12, VP9 realtime encode into WebM in memory.

Our side runs in a process of its own (``OurPipeline``, so that it can run llvmpipe without rasterizer
threads: see there). In it, compositing runs in the main thread and encoding in another
(perf/vp9_encoder.py: PyAV, libvpx-vp9, deadline realtime, cpu-used 8, row-mt, 2 threads, into a
BytesIO), joined by a bounded queue, so the two overlap (PyAV's encode releases the GIL for the libvpx
work). The clock stops when the encoder thread has closed the WebM and handed its bytes back.

Start-up is treated alike on both sides: a peer's one-frame run (process start, graph and encoder
set-up, one frame, flush) is subtracted from its timed runs, and so is ours (opening the encoder,
one frame, flush); ``--no-startup-correction`` keeps both raw.

The last iteration's WebM is decoded and checked against the composited frames (``verify_webm``):
a benchmark of an encoder that wrote nothing useful would measure nothing.

Peer: FFmpeg with the same frames (raw NV12 from /dev/shm), the same overlay geometry and the same libvpx
settings, writing WebM to /dev/null. Both sides read the same pre-made frames, so the encoder sees the
same content (VP9's cost depends on it).

compositor_pipeline_aac (``run_aac``): the same, plus a 1 kHz stereo tone encoded as AAC (FFmpeg's
``aac``, 128 kbit/s) beside the video, into Matroska (WebM holds no AAC). Our compositing thread hands
the encoder thread each frame's ``AudioBlock`` as the mixer would (contiguous, ``samples_until`` of the
frame's slot; cut from a pre-made second of tone, so the mixer's own cost is not in it: that is the
mixer's benchmark), and the encoder thread encodes it with the sinks' ``AudioTrack``. FFmpeg's side:
``-f lavfi -i sine=frequency=1000:sample_rate=48000:duration=...`` upmixed to stereo, ``-c:a aac -b:a 128k``.
The last iteration's file is checked for its sound too (AAC, 48 kHz stereo, as long as the video within
a frame, 1 kHz).
"""

from __future__ import annotations

import contextlib
import io
import os
import statistics
import threading
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from compositord.perf import peers, sources, vp9_encoder
from compositord.perf.harness import CompositorRun, compositor_params, gl_context
from compositord.perf.measure import Timing
from compositord.perf.options import BenchOptions
from compositord.perf.vp9_encoder import AudioSettings, EncoderThread, Vp9Settings
from compositord.protocol.layout import auto_pip_rect

NAME = "compositor_pipeline"
WIDTH, HEIGHT = 1280, 720
PIP_W, PIP_H = 640, 360
FPS = 30
GOP = 120
BITRATE = "2M"
VPX_OPTIONS = {"deadline": "realtime", "cpu-used": "8", "row-mt": "1"}
ENCODER_THREADS = 2
SETTINGS = Vp9Settings(
    WIDTH,
    HEIGHT,
    fps=FPS,
    gop=GOP,
    bit_rate=int(BITRATE.rstrip("M")) * 1_000_000,
    threads=ENCODER_THREADS,
    options=dict(VPX_OPTIONS),
)
NAME_AAC = "compositor_pipeline_aac"
SETTINGS_AAC = Vp9Settings(
    WIDTH,
    HEIGHT,
    fps=FPS,
    gop=GOP,
    bit_rate=SETTINGS.bit_rate,
    threads=ENCODER_THREADS,
    options=dict(VPX_OPTIONS),
    container="matroska",
    audio=AudioSettings(),
)
REFERENCE_FRAMES = 8  # composited frames kept at each end of the last iteration to check the decoded WebM against
MIN_PSNR_DB = 30.0  # measured: 55 dB over the frame, 46 dB over the PiP box; with the PiP missing: 22 and 14 dB


class VerificationFailed(RuntimeError):
    pass


def nv12_to_yuv420p_frame(nv12: Any) -> Any:
    """A WIDTHxHEIGHT NV12 frame as a yuv420p ``av.VideoFrame`` (what the encoder thread hands libvpx)."""
    return vp9_encoder.nv12_to_yuv420p_frame(nv12, WIDTH, HEIGHT)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0.0 else 10.0 * float(np.log10(255.0**2 / mse))


def verify_webm(webm: bytes, frames: int, reference_nv12: dict[int, Any], pip_box: tuple[int, int, int, int]) -> dict[str, Any]:
    """Decode ``webm``: it must hold ``frames`` frames of WIDTHxHEIGHT, and those numbered in ``reference_nv12``
    (frame number -> the composited NV12 frame) must match it to MIN_PSNR_DB, over the whole frame and over the picture-in-picture
    box alone (so that a missing PiP cannot hide in the average). Raises VerificationFailed; returns the figures."""
    import av

    worst_frame = worst_pip = 99.0
    decoded = 0
    with av.open(io.BytesIO(webm), mode="r") as container:
        for frame in container.decode(video=0):
            if (frame.width, frame.height) != (WIDTH, HEIGHT):
                raise VerificationFailed(f"decoded frame {decoded} is {frame.width}x{frame.height}, expected {WIDTH}x{HEIGHT}")
            if decoded in reference_nv12:
                got = frame.to_ndarray(format="yuv420p")
                want = nv12_to_yuv420p_frame(reference_nv12[decoded]).to_ndarray()
                x, y, w, h = pip_box
                worst_frame = min(worst_frame, _psnr(got, want))
                worst_pip = min(worst_pip, _psnr(got[y : y + h, x : x + w], want[y : y + h, x : x + w]))
            decoded += 1
    if decoded != frames:
        raise VerificationFailed(f"the WebM holds {decoded} frames, expected {frames}")
    if min(worst_frame, worst_pip) < MIN_PSNR_DB:
        raise VerificationFailed(
            f"decoded frames differ from the composited ones: PSNR {worst_frame:.1f} dB (whole frame), "
            f"{worst_pip:.1f} dB (picture-in-picture box), expected >= {MIN_PSNR_DB} dB"
        )
    return {
        "decoded_frames": decoded,
        "compared_frames": len([index for index in reference_nv12 if index < decoded]),
        "psnr_db_min": round(worst_frame, 2),
        "pip_psnr_db_min": round(worst_pip, 2),
    }


class ToneBlocks:
    """The sound of each frame as the compositor's mixer hands it to sinks: contiguous ``AudioBlock``s from
    ``samples_until(n / fps)`` to ``samples_until((n + 1) / fps)``, cut from one pre-made second of tone."""

    def __init__(self, audio: AudioSettings, fps: int) -> None:
        from compositord.daemon.engine.audio.bus import AudioBlock, samples_until

        self._block, self._until = AudioBlock, samples_until
        self.rate, self.fps = audio.sample_rate, fps
        seconds = np.arange(2 * audio.sample_rate) / audio.sample_rate
        tone = (0.5 * np.sin(2 * np.pi * audio.tone_hz * seconds)).astype(np.float32)
        self._table = np.repeat(tone[:, None], audio.channels, axis=1)  # two seconds: a block never wraps

    def block(self, index: int) -> Any:
        start, end = self._until(index / self.fps, self.rate), self._until((index + 1) / self.fps, self.rate)
        offset = start % self.rate  # a whole number of periods per second: the tone runs on seamlessly
        return self._block(self._table[offset : offset + end - start], start, self.rate)


def verify_audio(data: bytes, frames: int, audio: AudioSettings) -> dict[str, Any]:
    """The sound track of the last iteration: the codec, rate and layout asked for, as long as the video
    within a frame, and the tone's frequency. Raises VerificationFailed; returns the figures."""
    import av

    with av.open(io.BytesIO(data), mode="r") as container:
        if not container.streams.audio:
            raise VerificationFailed("the file has no audio stream")
        stream = container.streams.audio[0]
        name, rate, channels = (
            stream.codec_context.name,
            stream.codec_context.sample_rate,
            stream.codec_context.layout.nb_channels,
        )
        decoded = np.concatenate([frame.to_ndarray()[0] for frame in container.decode(stream)])
    if (name, rate, channels) != (audio.codec, audio.sample_rate, audio.channels):
        raise VerificationFailed(
            f"audio is {name} {rate} Hz {channels} ch, expected {audio.codec} {audio.sample_rate} Hz {audio.channels} ch"
        )
    seconds, video_seconds = len(decoded) / rate, frames / FPS
    if abs(seconds - video_seconds) >= 1 / FPS:
        raise VerificationFailed(f"{seconds:.3f} s of sound beside {video_seconds:.3f} s of video")
    window = decoded[rate // 2 : rate // 2 + rate // 10] if len(decoded) > rate else decoded
    spectrum = np.abs(np.fft.rfft(window * np.hanning(len(window))))
    peak = float(np.fft.rfftfreq(len(window), 1 / rate)[int(np.argmax(spectrum))])
    if abs(peak - audio.tone_hz) > 20:
        raise VerificationFailed(f"the sound peaks at {peak:.0f} Hz, expected {audio.tone_hz:g} Hz")
    return {"audio_seconds": round(seconds, 4), "video_seconds": round(video_seconds, 4), "tone_hz": round(peak, 1)}


def _iteration(
    run_: CompositorRun, encoder: EncoderThread, frames: int, keep: int = 0, sound: ToneBlocks | None = None
) -> tuple[float, bytes, dict[int, Any]]:
    """One timed pass: open the encoder, composite and hand over ``frames`` frames (and their sound), close the
    file. Returns (wall seconds, the file, the first and the last ``keep`` composited frames by number; the last
    ones are encoded from libvpx's look-ahead queue at the flush)."""
    kept: dict[int, Any] = {}
    started = time.perf_counter()
    encoder.begin()
    for index in range(frames):
        data = run_.frame().data
        encoder.put(data, sound.block(index) if sound is not None else None)
        if index < keep or index >= frames - keep:
            kept[index] = data  # the readback's own bytes, never written again
    webm = encoder.finish()
    return time.perf_counter() - started, webm, kept


def _pip_box() -> tuple[int, int, int, int]:
    rect = auto_pip_rect(1, WIDTH, HEIGHT, PIP_W, PIP_H)
    return round(rect.x), round(rect.y), round(rect.width), round(rect.height)


def _ffmpeg(background: str, pip: str, settings: Vp9Settings = SETTINGS) -> peers.Peer:
    x, y, w, h = _pip_box()
    w, h = w + (w % 2), h + (h % 2)
    graph = f"[1]scale={w}:{h}[pip];[0][pip]overlay={x}:{y}:format=yuv420[v]"
    # The encoder options come from the settings our encoder thread uses too: the same by construction.
    vpx_options = [arg for name, value in settings.options.items() for arg in (f"-{name}", value)]
    audio = settings.audio

    def sound_input(frames: int) -> list[str]:
        if audio is None:
            return []
        tone = f"sine=frequency={audio.tone_hz:g}:sample_rate={audio.sample_rate}:duration={frames / settings.fps:.6f}"
        return ["-f", "lavfi", "-i", tone]

    def sound_output() -> list[str]:
        if audio is None:
            return []
        return ["-map", "2:a", "-c:a", audio.codec, "-b:a", f"{audio.bit_rate_kbps}k", "-ac", str(audio.channels)]

    def command(frames: int) -> list[str]:
        return [
            "ffmpeg",
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "error",
            "-stream_loop",
            "-1",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "nv12",
            "-s",
            f"{WIDTH}x{HEIGHT}",
            "-r",
            str(settings.fps),
            "-i",
            background,
            "-stream_loop",
            "-1",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "nv12",
            "-s",
            f"{PIP_W}x{PIP_H}",
            "-r",
            str(settings.fps),
            "-i",
            pip,
            *sound_input(frames),
            "-filter_complex",
            graph,
            "-map",
            "[v]",
            *sound_output(),
            "-frames:v",
            str(frames),
            "-c:v",
            "libvpx-vp9",
            *vpx_options,
            "-threads",
            str(settings.threads),
            "-b:v",
            str(settings.bit_rate),
            "-g",
            str(settings.gop),
            "-pix_fmt",
            "yuv420p",
            "-f",
            settings.container,
            "-y",
            "/dev/null",
        ]

    return peers.Peer("ffmpeg", command)


LLVMPIPE_THREADS = 0  # for our process, unless LP_NUM_THREADS is set (--lp-threads): see OurPipeline
COMPOSITING_NICE = (
    5  # added to the compositing thread's nice value in our process (the encoder's threads keep theirs): see OurPipeline
)


def _our_pipeline_main(
    conn: Connection,
    bg_cycle: list[np.ndarray],
    pip_cycle: list[np.ndarray],
    lp_threads: int | None,
    profile_frames: int | None,
    settings: Vp9Settings = SETTINGS,
) -> None:
    """The child process of OurPipeline: the compositor and the encoder thread, serving its requests."""
    if lp_threads is not None:
        os.environ["LP_NUM_THREADS"] = str(lp_threads)  # before this process's first GL context

    def say(*lines: Any) -> None:
        conn.send(("say", [str(line) for line in lines]))

    try:
        params = compositor_params({"width": WIDTH, "height": HEIGHT, "num_inputs": 2, "output_format": "nv12"})
        sound = ToneBlocks(settings.audio, settings.fps) if settings.audio is not None else None
        with EncoderThread(settings) as encoder, gl_context() as ctx:
            # This thread only (Linux: a thread's own nice value); the encoder thread, made before, and the
            # libvpx thread it starts keep theirs. Lowering one's own priority needs no privilege.
            this_thread = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, this_thread, min(19, os.getpriority(os.PRIO_PROCESS, this_thread) + COMPOSITING_NICE))
            run_ = CompositorRun(
                ctx,
                params,
                {
                    "in_0": sources.CyclingSource(bg_cycle, "nv12", WIDTH, HEIGHT).frame,
                    "in_1": sources.CyclingSource(pip_cycle, "nv12", PIP_W, PIP_H).frame,
                },
            )
            try:
                for _ in range(5):
                    run_.frame()
                profile_rows = None
                if profile_frames is not None:
                    from compositord.perf.profile import breakdown

                    profile_rows = breakdown(run_, frames=profile_frames, say=say)
                conn.send(("ready", profile_rows, _llvmpipe_thread_count(), _thread_nice_values()))
                while True:
                    request = conn.recv()
                    if request[0] == "startup":
                        conn.send(("startup", statistics.median(_iteration(run_, encoder, 1, sound=sound)[0] for _ in range(3))))
                    elif request[0] == "iteration":
                        _, frames, verify = request
                        wall, webm, reference = _iteration(run_, encoder, frames, REFERENCE_FRAMES if verify else 0, sound)
                        verified = verify_webm(webm, frames, reference, _pip_box()) if verify else None
                        if verified is not None and settings.audio is not None:
                            verified.update(verify_audio(webm, frames, settings.audio))
                        conn.send(("iteration", wall, len(webm), verified))
                    else:
                        return
            finally:
                run_.release()
    except EOFError:  # the parent went away: nobody to tell
        return
    except BaseException:
        conn.send(("error", traceback.format_exc()))


def _llvmpipe_thread_count() -> int:
    """llvmpipe's rasterizer threads in this process (named llvmpipe-N)."""
    count = 0
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/comm") as comm:
                count += comm.read().startswith("llvmpipe")
        except OSError:
            pass
    return count


def _thread_nice_values() -> dict[str, int]:
    """Python thread name -> nice value, in this process."""
    return {
        thread.name: os.getpriority(os.PRIO_PROCESS, thread.native_id) for thread in threading.enumerate() if thread.native_id
    }


class OurPipeline:
    """Our side (compositing in one thread, encoding in another) in a process of its own.

    Why a process: llvmpipe reads LP_NUM_THREADS once per process (its screen outlives every context),
    and this scenario is faster without llvmpipe's rasterizer threads, while compositor_only, which
    ``bench all`` runs in the same process afterwards, keeps the default. On two cores the encoder's two
    threads want both; llvmpipe's two threads then took ~0.9 ms of CPU per frame on top of the ~1.0 ms
    of the compositing thread, and rasterizing in the compositing thread itself (LP_NUM_THREADS=0) gave
    8-10 % more fps against FFmpeg in interleaved runs (/work/notes/compositor-pipeline.md). And the
    compositing thread runs COMPOSITING_NICE nice steps below the encoder's threads: on a core both want,
    the encoder (the slower stage, ~4.5 ms a frame against ~1 ms) goes first and compositing fills the
    gaps, four frames of queue ahead (about +5 % in the same runs; lowering our own priority only,
    never raising it, so neither FFmpeg nor anyone else loses to it). The process
    is started, its GL context made and its frames warmed up before any clock runs, as in-process the
    context was; each ``iteration`` is timed inside it, so the pipe adds nothing to the figures.
    """

    def __init__(
        self,
        bg_cycle: list[np.ndarray],
        pip_cycle: list[np.ndarray],
        *,
        profile_frames: int | None,
        say: Any,
        settings: Vp9Settings = SETTINGS,
    ) -> None:
        import multiprocessing

        self._say = say
        lp_threads = None if "LP_NUM_THREADS" in os.environ else LLVMPIPE_THREADS
        self.lp_num_threads = os.environ.get("LP_NUM_THREADS", str(lp_threads))
        context = multiprocessing.get_context("spawn")  # a fresh process: no GL state, no threads inherited
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_our_pipeline_main,
            args=(child, bg_cycle, pip_cycle, lp_threads, profile_frames, settings),
            name="bench-compositor-pipeline",
            daemon=True,
        )
        self._process.start()
        child.close()
        try:
            self.profile_rows, self.llvmpipe_threads, self.thread_nice = self._ask(None, "ready")
        except BaseException:
            self.close()
            raise

    def startup(self) -> float:
        """Median of three one-frame iterations (opening the encoder, one frame, flush)."""
        return self._ask(("startup",), "startup")[0]

    def iteration(self, frames: int, *, verify: bool) -> tuple[float, int, dict[str, Any] | None]:
        """(wall seconds, WebM bytes, ``verify_webm``'s figures when ``verify``)."""
        wall, size, verified = self._ask(("iteration", frames, verify), "iteration")
        return wall, size, verified

    def _ask(self, request: tuple[Any, ...] | None, answer: str) -> tuple[Any, ...]:
        if request is not None:
            self._conn.send(request)
        while True:
            try:
                message = self._conn.recv()
            except EOFError:
                raise RuntimeError(f"our compositor_pipeline process exited (code {self._process.exitcode})") from None
            if message[0] == "say":
                self._say(*message[1])
            elif message[0] == "error":
                raise RuntimeError(f"our compositor_pipeline process failed:\n{message[1]}")
            elif message[0] == answer:
                return tuple(message[1:])

    def close(self) -> None:
        if self._process.is_alive():
            with contextlib.suppress(OSError):
                self._conn.send(("quit",))
            self._process.join(30.0)
            if self._process.is_alive():
                self._process.terminate()
                self._process.join()
        self._conn.close()

    def __enter__(self) -> OurPipeline:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def run(options: BenchOptions) -> dict[str, Any]:
    return _run(options, SETTINGS)


def run_aac(options: BenchOptions) -> dict[str, Any]:
    """compositor_pipeline_aac: the same with an AAC track beside the video, into Matroska."""
    return _run(options, SETTINGS_AAC)


def _run(options: BenchOptions, settings: Vp9Settings) -> dict[str, Any]:
    frames = options.frames_or(300, 30)
    iterations = options.iterations_or(3, 1)
    if settings.audio is None:
        what = f"{NAME}: {WIDTH}x{HEIGHT} NV12 bars + auto-PiP bars, VP9 realtime into WebM in memory"
    else:
        what = (
            f"{NAME_AAC}: {WIDTH}x{HEIGHT} NV12 bars + auto-PiP bars, VP9 realtime + AAC {settings.audio.bit_rate_kbps} kbit/s"
            f" {settings.audio.sample_rate} Hz stereo into Matroska in memory"
        )
    options.say(f"== {what}, {frames} frames x {iterations}")
    bg_cycle = [sources.rgba_to_nv12(f) for f in sources.rgba_cycle(WIDTH, HEIGHT)]
    pip_cycle = [sources.rgba_to_nv12(f) for f in sources.rgba_cycle(PIP_W, PIP_H, pattern="ramp")]
    notes: list[str] = []
    peer_list: list[peers.Peer] = []
    scratch = None
    if options.compare:
        if peers.have_ffmpeg():
            scratch = sources.scratch_dir()
            bg_file, _ = sources.write_raw_cycle(scratch, "bg", bg_cycle, "nv12")
            pip_file, _ = sources.write_raw_cycle(scratch, "pip", pip_cycle, "nv12")
            peer_list.append(_ffmpeg(str(bg_file), str(pip_file), settings))
        else:
            notes.append("ffmpeg not installed")
    ours = Timing("compositord", frames)
    peer_runs = peers.PeerRuns(peer_list, frames, startup_correction=options.startup_correction, notes=notes)
    sizes: list[int] = []
    verified: dict[str, Any] | None = None
    profile_frames = options.frames_or(120, 20) if options.profile else None
    try:
        with OurPipeline(bg_cycle, pip_cycle, profile_frames=profile_frames, say=options.say, settings=settings) as pipeline:
            startup = pipeline.startup() if options.startup_correction else 0.0
            for iteration in range(iterations):
                wall, size, verified = pipeline.iteration(frames, verify=iteration == iterations - 1)
                ours.walls.append(max(1e-6, wall - startup))
                sizes.append(size)
                peer_runs.run_once()  # interleaved: A B C A B C
    finally:
        if scratch is not None:
            import shutil

            shutil.rmtree(scratch, ignore_errors=True)
    assert verified is not None
    label = f" (start-up {startup:.3f}s subtracted: opening the encoder, one frame, flush)" if options.startup_correction else ""
    options.say(
        f"-- compositord{label}; LP_NUM_THREADS={pipeline.lp_num_threads} ({pipeline.llvmpipe_threads} llvmpipe threads); "
        f"nice values {pipeline.thread_nice}",
        ours.summary(),
        f"{settings.container} bytes per iteration: {sizes}",
        f"last {settings.container} file decoded: {verified['decoded_frames']} frames; PSNR against the composited frames >= "
        f"{verified['psnr_db_min']} dB (whole frame), {verified['pip_psnr_db_min']} dB (PiP box)",
    )
    if settings.audio is not None:
        options.say(
            f"its sound: {verified['audio_seconds']} s of AAC beside {verified['video_seconds']} s of video, peak {verified['tone_hz']} Hz"
        )
    result: dict[str, Any] = {
        "ours": {
            **ours.as_dict(),
            "webm_bytes": sizes,
            "startup_s": round(startup, 4),
            "verified": verified,
            "lp_num_threads": pipeline.lp_num_threads,
            "llvmpipe_threads": pipeline.llvmpipe_threads,
            "thread_nice": pipeline.thread_nice,
        },
        "peers": peer_runs.report(ours, options.say),
        "notes": notes,
    }
    if pipeline.profile_rows is not None:
        result["profile"] = pipeline.profile_rows
    return result
