"""One compositor's mixer: its inputs' sound, each at its gain, summed, clipped, in the output format, metered.

It runs on the render thread once per output frame (numpy only, no GL, no
blocking: the render loop has already read every input's block, see
``audio.frame_audio``). Per input pin, from the layer's ``audio`` params in
the program scene:

- gain: ``10 ** (gain_db / 20)``, 0 when ``mute``; with ``follow_video``
  times the layer's presence on the program output (:class:`ProgramPresence`).
  A gain that changed since the last block moves there in a straight line
  across this block (one frame), so a mute, a fader move or a cut never clicks;
  a steady gain is exact.
- the gained inputs are summed and the sum is clipped to [-1, 1] (the
  samples clipped are counted), then converted to the compositor's sample
  rate and channels (``audio.output_format``).

Meters (``audio.meters``): per input after its gain (stereo), and the mix
after clipping in the output layout (at the bus rate, before resampling:
the same levels, without the resampler's delay).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from compositord.daemon.engine.audio.bus import BUS_CHANNELS, BUS_DTYPE, AudioBlock
from compositord.daemon.engine.audio.meters import LevelMeter
from compositord.daemon.engine.audio.output_format import OutputFormat, downmix

MAX_PENDING_S = 1.0  # mixed sound kept for sinks while no frame reaches them (failed frames); then the oldest goes


@dataclass(frozen=True)
class InputSettings:
    """How one input pin's sound goes into the mix."""

    gain_db: float = 0.0
    mute: bool = False
    follow_video: bool = False
    presence: float = 1.0  # the layer's presence on the program output, 0..1 (used with follow_video)

    @property
    def linear_gain(self) -> float:
        if self.mute:
            return 0.0
        gain = 10.0 ** (self.gain_db / 20.0)
        return gain * self.presence if self.follow_video else gain


def layer_presence(layer: Mapping[str, Any] | None) -> float:
    """How much of a layer a scene shows: its opacity, 0 when it is not visible."""
    if layer is None or not layer.get("visible", True):
        return 0.0
    return min(1.0, max(0.0, float(layer.get("opacity", 1.0))))


def input_settings(layers: Mapping[str, Any], presences: Mapping[str, float]) -> dict[str, InputSettings]:
    """Every pin's settings from the program scene's (filled) ``layers`` and the pins' presences."""
    settings: dict[str, InputSettings] = {}
    for pin, layer in layers.items():
        audio = layer.get("audio") or {}
        settings[pin] = InputSettings(
            float(audio.get("gain_db", 0.0)),
            bool(audio.get("mute", False)),
            bool(audio.get("follow_video", False)),
            presences.get(pin, 0.0),
        )
    return settings


class ProgramPresence:
    """Each input's presence on a compositor's program output, frame after frame.

    Without a transition it is the program scene's ``layer_presence``. During
    one, the outgoing and incoming presences crossfade by the transition's
    eased progress (whatever its kind: a wipe moves a layer off as a fade
    does); when the outgoing picture is a snapshot (no outgoing scene to read),
    the outgoing presences are the ones of the frame before the transition
    started. A held T-bar (``manual``) crossfades by its position as a
    transition does by its progress.
    """

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._snapshot: dict[str, float] = {}
        self._running: tuple[Any, Any] | None = None

    def next_frame(
        self,
        layers: Mapping[str, Any],
        *,
        transition: Mapping[str, Any] | None = None,
        outgoing_layers: Mapping[str, Any] | None = None,
    ) -> dict[str, float]:
        incoming = {pin: layer_presence(layer) for pin, layer in layers.items()}
        manual = bool(transition is not None and transition.get("manual"))
        if transition is None or (manual and outgoing_layers is None):
            # No transition, or a T-bar that shows the program scene alone (at 0, a cut before half way).
            self._running = None
            result = incoming
        else:
            key = (transition["from"], transition["to"])
            if key != self._running or transition.get("frame", 0) <= 1:
                self._running = key
                self._snapshot = dict(self._last)
            if outgoing_layers is not None:
                outgoing = {pin: layer_presence(outgoing_layers.get(pin)) for pin in incoming}
            else:
                outgoing = self._snapshot
            progress = float(transition["progress"])
            if manual and transition.get("kind") == "cut":
                progress = 1.0  # a held cut past half way shows the preview scene alone
            result = {pin: (1.0 - progress) * outgoing.get(pin, 0.0) + progress * value for pin, value in incoming.items()}
        self._last = result
        return result


class CompositorMixer:
    """The mixer of one compositor (render thread)."""

    def __init__(self) -> None:
        self._format: OutputFormat | None = None
        self._gains: dict[str, float] = {}  # the gain each pin ended its last block at
        self.presence = ProgramPresence()
        self.input_meters: dict[str, LevelMeter] = {}
        self.mix_meter = LevelMeter(BUS_CHANNELS)
        self._pending: deque[AudioBlock] = deque()
        self.clipped_samples = 0
        self.dropped_samples = 0  # mixed sound no sink got (kept too long while frames failed)
        self.blocks_mixed = 0
        self.bus_mix: np.ndarray | None = None  # the last block's mix in the bus format, for a compositor this one feeds

    def mix(
        self,
        block_start: int,
        inputs: Mapping[str, np.ndarray],
        settings: Mapping[str, InputSettings],
        *,
        sample_rate: int,
        layout: str,
    ) -> AudioBlock | None:
        """The mix of one frame: ``inputs`` maps each pin whose source has sound to its bus-format block
        (all of one length, starting at bus sample ``block_start``). None when no input has sound."""
        if not inputs:
            self._gains.clear()
            self.bus_mix = None
            return None
        fmt = self._format
        if fmt is None or fmt.sample_rate != sample_rate or fmt.layout != layout:
            fmt = self._format = OutputFormat(sample_rate, layout)
        count = next(iter(inputs.values())).shape[0]
        mix = np.zeros((count, BUS_CHANNELS), dtype=BUS_DTYPE)
        gains: dict[str, float] = {}
        for pin, samples in inputs.items():
            target = settings.get(pin, InputSettings()).linear_gain
            start = self._gains.get(pin, target)
            gains[pin] = target
            gained = self._apply_gain(samples, start, target)
            meter = self.input_meters.get(pin)
            if meter is None:
                meter = self.input_meters[pin] = LevelMeter(BUS_CHANNELS)
            meter.feed(gained)
            mix += gained
        self._gains = gains
        self.clipped_samples += int(np.count_nonzero(np.abs(mix) > 1.0))
        np.clip(mix, -1.0, 1.0, out=mix)
        self.bus_mix = mix
        block = fmt.convert(mix, block_start)
        self.mix_meter.feed(downmix(mix, layout))
        self.blocks_mixed += 1
        return block

    @staticmethod
    def _apply_gain(samples: np.ndarray, start: float, target: float) -> np.ndarray:
        count = samples.shape[0]
        if start == target or count == 0:
            return samples * np.float32(target)
        ramp = np.linspace(start, target, count + 1, dtype=np.float32)[1:, None]
        return samples * ramp

    # ---- handing the mix to sinks

    def hold(self, block: AudioBlock) -> None:
        """Keep a mixed block until a frame takes it to the sinks (:meth:`take`)."""
        if self._pending and (
            self._pending[-1].sample_rate != block.sample_rate
            or self._pending[-1].channels != block.channels
            or self._pending[-1].end_sample != block.start_sample
        ):
            self._drop_pending()  # a new format (or position) starts afresh: blocks of two cannot be joined
        self._pending.append(block)
        limit = MAX_PENDING_S * block.sample_rate
        while sum(b.count for b in self._pending) > limit and len(self._pending) > 1:
            self.dropped_samples += self._pending.popleft().count

    def take(self) -> AudioBlock | None:
        """Everything held since the last take, as one contiguous block (None: nothing held)."""
        if not self._pending:
            return None
        if len(self._pending) == 1:
            return self._pending.popleft()
        first = self._pending[0]
        samples = np.concatenate([block.samples for block in self._pending])
        self._pending.clear()
        return AudioBlock(samples, first.start_sample, first.sample_rate)

    def discard_held(self) -> None:
        """No sink takes the program output: nothing is kept."""
        self._pending.clear()

    def _drop_pending(self) -> None:
        self.dropped_samples += sum(block.count for block in self._pending)
        self._pending.clear()

    # ---- meters

    def reading(self, pins: Iterable[str]) -> dict[str, Any] | None:
        """Meters since the last reading (None when nothing was mixed since), for ``pins`` (the connected
        inputs with sound); restarts them."""
        if not self.mix_meter.fed:
            return None
        wanted = set(pins)
        for pin in [p for p in self.input_meters if p not in wanted]:
            del self.input_meters[pin]
        fmt = self._format
        return {
            "sample_rate": fmt.sample_rate if fmt is not None else None,
            "channels": fmt.layout if fmt is not None else None,
            "mix": self.mix_meter.reading(),
            "inputs": {pin: self.input_meters[pin].reading() for pin in sorted(self.input_meters)},
            "clipped_samples": self.clipped_samples,
            "dropped_samples": self.dropped_samples,
        }
