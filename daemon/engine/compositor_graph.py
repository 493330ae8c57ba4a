"""How a session's compositors feed each other and the sinks: render order and what each output pin needs.

Pure Python over a ``SessionRecord``. A compositor's output (``out``, the
program, or ``preview``) may feed another compositor's input (nested
compositors): the render loop then draws the inner one first in each frame
and hands its picture over as a texture (``render.frames.TextureFrame``),
with no read back. ``protocol.params.validate_pipeline`` refuses cycles, so
the order below always exists; were one to slip through, its compositors
are still drawn (after the others), each showing nothing of the compositor
it waits for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from compositord.daemon.state.model import SessionRecord
from compositord.protocol.params import COMPOSITOR_KIND, OUTPUT_PIN, PREVIEW_PIN


@dataclass(frozen=True)
class OutputUses:
    """Who takes a compositor's two output pins."""

    program_to_sinks: bool = False
    program_to_compositors: bool = False
    preview_to_sinks: bool = False
    preview_to_compositors: bool = False

    @property
    def preview_wanted(self) -> bool:
        return self.preview_to_sinks or self.preview_to_compositors


def output_uses(session: SessionRecord, is_sink: Callable[[str], bool]) -> dict[str, OutputUses]:
    """Per compositor node, who its ``out`` and ``preview`` feed (``is_sink(kind)`` names the sink kinds)."""
    nodes = session.nodes
    found: dict[str, dict[str, bool]] = {node_id: {} for node_id, node in nodes.items() if node.kind == COMPOSITOR_KIND}
    for conn in session.connections:
        uses = found.get(conn.from_node)
        target = nodes.get(conn.to_node)
        if uses is None or target is None or conn.from_pin not in (OUTPUT_PIN, PREVIEW_PIN):
            continue
        side = "program" if conn.from_pin == OUTPUT_PIN else "preview"
        if target.kind == COMPOSITOR_KIND:
            uses[f"{side}_to_compositors"] = True
        elif is_sink(target.kind):
            uses[f"{side}_to_sinks"] = True
    return {node_id: OutputUses(**flags) for node_id, flags in found.items()}


def render_order(session: SessionRecord) -> list[str]:
    """The compositor nodes, each after every compositor that feeds it (ties in id order)."""
    compositors = sorted(node_id for node_id, node in session.nodes.items() if node.kind == COMPOSITOR_KIND)
    feeders: dict[str, set[str]] = {node_id: set() for node_id in compositors}
    for conn in session.connections:
        if conn.to_node in feeders and conn.from_node in feeders and conn.from_node != conn.to_node:
            feeders[conn.to_node].add(conn.from_node)
    order: list[str] = []
    placed: set[str] = set()
    while len(order) < len(compositors):
        ready = [node_id for node_id in compositors if node_id not in placed and feeders[node_id] <= placed]
        if not ready:  # a cycle: the rest in id order
            ready = [node_id for node_id in compositors if node_id not in placed]
        for node_id in ready:
            order.append(node_id)
            placed.add(node_id)
    return order
