"""What a compositor's program output shows, frame by frame: its scene, and the transition when that changes.

Pure Python over full params (no GL): the render loop asks :meth:`SceneProgram.next_frame`
once per output frame and draws what the returned :class:`ProgramFrame` says.

Rules (PROTOCOL.md section 4, docs/RENDERING.md "Transitions"):

- The first frame shows ``program_scene`` as it is (nothing to come from).
- A frame whose params name another ``program_scene`` than the one shown starts
  the params' ``transition``: ``frame_count(duration_ms, fps)`` output frames,
  frame k showing the mix at eased k/n, the last one the incoming scene alone
  (so ``cut``, or a transition of one frame, switches in that frame).
- Both pictures are live: the outgoing scene is drawn from its current params
  every frame, so an edit of either scene during the transition is seen. When
  there is no outgoing scene to draw (the change interrupts a running
  transition, the outgoing scene was deleted, or the layout came from the
  implicit scene), the transition starts from a snapshot of what the output
  showed in the frame before: a transition interrupted by another starts from
  what is on screen, and there is never a jump.
- A canvas of another size ends a running transition: the new size shows the
  incoming scene at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from compositord.protocol import scenes
from compositord.protocol.scenes import MixGeometry, TransitionSpec


@dataclass(frozen=True)
class RunningTransition:
    spec: TransitionSpec
    from_scene: str | None  # what was on program before (for the view data)
    to_scene: str | None
    live_outgoing: bool  # the outgoing scene is drawn from its params; else from the snapshot
    frames: int
    frame: int  # the last frame drawn, 1..frames
    canvas: tuple[int, int]


@dataclass(frozen=True)
class ProgramFrame:
    """What one program frame draws."""

    scene: str | None  # the program scene (during a transition: the incoming one); None: the implicit scene
    params: dict[str, Any]  # its flat params (``scenes.scene_params``)
    mix: MixGeometry | None = None  # set during a transition
    outgoing_params: dict[str, Any] | None = None  # during a transition: the outgoing scene's flat params, or None: the snapshot
    take_snapshot: bool = False  # copy what the output shows before drawing (the transition starts from it)
    transition: dict[str, Any] | None = None  # during a transition: what the view data says of it


class SceneProgram:
    """The program output's state of one compositor node (render thread)."""

    def __init__(self) -> None:
        self._started = False
        self._shown: str | None = None
        self._running: RunningTransition | None = None

    @property
    def running(self) -> RunningTransition | None:
        return self._running

    def next_frame(self, full: Mapping[str, Any], fps: float, *, can_snapshot: bool) -> ProgramFrame:
        """The next frame of the output for ``full`` params (with defaults) at the loop's ``fps``.

        ``can_snapshot``: the renderer holds a picture of the previous frame to start a transition from.
        """
        target: str | None = full["program_scene"]
        named: Mapping[str, Any] = full["scenes"]
        canvas = (int(full["width"]), int(full["height"]))
        snapshot = False
        if not self._started:
            self._started = True
            self._shown = target
        elif target != self._shown:
            previous, self._shown = self._shown, target
            spec = TransitionSpec.from_params(full["transition"])
            frames = scenes.frame_count(spec.duration_ms, fps)
            live = self._running is None and previous is not None and previous in named
            if spec.kind == "cut" or frames <= 1 or not (live or can_snapshot):
                self._running = None
            else:
                snapshot = not live
                self._running = RunningTransition(spec, previous, target, live, frames, 0, canvas)
        running = self._running
        if running is not None and running.canvas != canvas:
            running = None
        if running is not None and running.live_outgoing and running.from_scene not in named:
            # The outgoing scene was deleted mid-transition: go on from what is on screen.
            running = replace(running, live_outgoing=False) if can_snapshot else None
            snapshot = running is not None
        params = scenes.scene_params(full, target)
        if running is None:
            self._running = None
            return ProgramFrame(target, params)
        running = replace(running, frame=running.frame + 1)
        if running.frame >= running.frames:
            self._running = None
            return ProgramFrame(target, params)
        self._running = running
        eased = scenes.ease(running.spec.easing, running.frame / running.frames)
        spec = running.spec
        return ProgramFrame(
            target,
            params,
            mix=scenes.mix_geometry(spec, eased, *canvas),
            outgoing_params=scenes.scene_params(full, running.from_scene) if running.live_outgoing else None,
            take_snapshot=snapshot,
            transition={
                "kind": spec.kind,
                "direction": spec.direction,
                "easing": spec.easing,
                "from": running.from_scene,
                "to": running.to_scene,
                "frame": running.frame,
                "frames": running.frames,
                "progress": round(eased, 6),
            },
        )
