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
- A tune's ``_transition`` (``transition``, a patch of the params' one) is the
  transition of the change of ``program_scene`` in the frame that latches it,
  that once; the params keep theirs for the next change. Without a change in
  that frame it counts for nothing. A cut this way from the scene a T-bar
  holds is a cut: the held mix is left, not finished.
- A canvas of another size ends a running transition: the new size shows the
  incoming scene at once.

The T-bar (``transition_position``, a hand on the transition; RENDERING.md "The T-bar"):

- Held: while ``transition_position`` p is set, ``preview_scene`` names
  another scene than ``program_scene`` and no automatic transition runs, the
  output is the params' transition from the program scene to the preview
  scene at progress p, linear (the hand is the easing), both drawn live;
  ``cut`` shows the program scene below one half and the preview scene from
  it. p = 0 is the program scene alone. The view data keeps the program
  scene's layout and ``scene``; its ``transition`` says ``manual`` and the
  ``position``.
- Taken: a change of ``program_scene`` to the scene the bar held (a ``take``,
  which also clears the bar) finishes the change from where the bar stood: the
  rest of the transition, progress p + (1 - p) * eased k/n over
  n = frame_count((1 - p) * duration_ms); nothing more when the output already
  showed the preview scene alone (p = 1, or ``cut`` from one half), so a take
  at the end of the bar never jumps.
- An automatic transition (any other change of ``program_scene``) started with
  the bar set runs as usual, from a snapshot of the held mix; the bar's value
  of that moment then no longer counts until the bar moves (another value, or
  cleared), so the transition ends on the new program scene alone. A bar moved
  while an automatic transition runs counts from the frame after it ends.
- A change of ``preview_scene`` under a held bar is seen at once: the held
  mix goes to the new preview scene, at the same position.
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
    start: float = 0.0  # the progress of frame 0: a take from a held T-bar goes on from where the bar stood


@dataclass(frozen=True)
class HeldBar:
    """What the T-bar held in the last frame: the mix from ``from_scene`` (program) to ``to_scene`` (preview)."""

    from_scene: str
    to_scene: str
    position: float
    spec: TransitionSpec

    def shows_incoming_alone(self) -> bool:
        return self.position >= (0.5 if self.spec.kind == "cut" else 1.0)


@dataclass(frozen=True)
class ProgramFrame:
    """What one program frame draws."""

    scene: str | None  # the program scene (during a transition: the incoming one); None: the implicit scene
    params: dict[str, Any]  # its flat params (``scenes.scene_params``)
    mix: MixGeometry | None = None  # set during a transition
    outgoing_params: dict[str, Any] | None = None  # during a transition: the outgoing scene's flat params, or None: the snapshot
    take_snapshot: bool = False  # copy what the output shows before drawing (the transition starts from it)
    transition: dict[str, Any] | None = None  # during a transition: what the view data says of it
    manual: bool = False  # the T-bar holds the mix: the view data shows the outgoing (program) scene's layout


class SceneProgram:
    """The program output's state of one compositor node (render thread)."""

    def __init__(self) -> None:
        self._started = False
        self._shown: str | None = None
        self._running: RunningTransition | None = None
        self._held: HeldBar | None = None  # what the T-bar held in the last frame
        self._parked_position: float | None = None  # a T-bar value that does not count until the bar moves

    @property
    def running(self) -> RunningTransition | None:
        return self._running

    def next_frame(
        self, full: Mapping[str, Any], fps: float, *, can_snapshot: bool, transition: Mapping[str, Any] | None = None
    ) -> ProgramFrame:
        """The next frame of the output for ``full`` params (with defaults) at the loop's ``fps``.

        ``can_snapshot``: the renderer holds a picture of the previous frame to start a transition from.
        ``transition``: a patch of the params' ``transition`` for a change of ``program_scene`` in this
        frame (a tune's ``_transition``); a T-bar held towards the new scene is then not finished but left,
        as an automatic transition leaves it. Without a change in this frame it counts for nothing.
        """
        target: str | None = full["program_scene"]
        named: Mapping[str, Any] = full["scenes"]
        canvas = (int(full["width"]), int(full["height"]))
        position: float | None = full.get("transition_position")
        if position != self._parked_position:
            self._parked_position = None
        held, self._held = self._held, None
        snapshot = False
        if not self._started:
            self._started = True
            self._shown = target
        elif target != self._shown:
            previous, self._shown = self._shown, target
            spec = TransitionSpec.from_params(full["transition"] if transition is None else {**full["transition"], **transition})
            if held is not None and held.to_scene == target and transition is None:
                self._running = self._finish_held(held, fps, canvas)
            else:
                if position is not None:
                    self._parked_position = position
                frames = scenes.frame_count(spec.duration_ms, fps)
                live = self._running is None and held is None and previous is not None and previous in named
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
            preview: str | None = full["preview_scene"]
            if (
                position is not None
                and self._parked_position is None
                and target is not None
                and preview is not None
                and preview != target
                and preview in named
            ):
                return self._held_frame(full, HeldBar(target, preview, position, TransitionSpec.from_params(full["transition"])))
            return ProgramFrame(target, params)
        running = replace(running, frame=running.frame + 1)
        if running.frame >= running.frames:
            self._running = None
            return ProgramFrame(target, params)
        self._running = running
        eased = running.start + (1.0 - running.start) * scenes.ease(running.spec.easing, running.frame / running.frames)
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

    def _finish_held(self, held: HeldBar, fps: float, canvas: tuple[int, int]) -> RunningTransition | None:
        """The rest of the held transition, from where the bar stood (None: the output already shows its end)."""
        if held.shows_incoming_alone() or held.spec.kind == "cut":
            return None
        frames = scenes.frame_count((1.0 - held.position) * held.spec.duration_ms, fps)
        if frames <= 1:
            return None
        return RunningTransition(held.spec, held.from_scene, held.to_scene, True, frames, 0, canvas, start=held.position)

    def _held_frame(self, full: Mapping[str, Any], held: HeldBar) -> ProgramFrame:
        """The frame of a held T-bar: the mix from the program scene to the preview scene at the bar's position."""
        self._held = held
        spec = held.spec
        program = scenes.scene_params(full, held.from_scene)
        transition = {
            "kind": spec.kind,
            "direction": spec.direction,
            "easing": "linear",
            "from": held.from_scene,
            "to": held.to_scene,
            "manual": True,
            "position": held.position,
            "progress": held.position,
        }
        if held.position <= 0.0 or (spec.kind == "cut" and not held.shows_incoming_alone()):
            return ProgramFrame(held.from_scene, program, transition=transition, manual=True)
        incoming = scenes.scene_params(full, held.to_scene)
        if held.shows_incoming_alone():
            return ProgramFrame(held.from_scene, incoming, outgoing_params=program, transition=transition, manual=True)
        width, height = int(full["width"]), int(full["height"])
        return ProgramFrame(
            held.from_scene,
            incoming,
            mix=scenes.mix_geometry(spec, held.position, width, height),
            outgoing_params=program,
            transition=transition,
            manual=True,
        )
