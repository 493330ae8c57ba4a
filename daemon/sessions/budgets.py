"""The daemon's budgets applied to its sessions: what each running session costs, and the check of a change.

``protocol/budget.py`` computes what a pipeline will cost and refuses one that
passes a budget; this keeps the cost of every running (or starting) session,
so a change is checked against the others' totals and its session's cost
before the change (the field the change grew is the one named). A change
takes its session's new cost at once, before it waits for the store, so two
changes in flight cannot both spend the same room; one that fails gives it
back (:meth:`Budgets.reserve`).

Sessions restored from the store at start are checked the same way, in the
order the store lists them; one that does not fit is *parked*: stored,
listed with its reason, not started (``LiveSessions.park``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from compositord.daemon.state.model import ConnectionRecord, NodeRecord
from compositord.protocol import budget
from compositord.protocol.budget import BudgetLimits, SessionCost


def pipeline_of(nodes: Mapping[str, NodeRecord], connections: Iterable[ConnectionRecord]) -> dict[str, Any]:
    """Records as ``protocol.budget`` reads a pipeline (params by reference: the check only reads them)."""
    return {
        "nodes": {node_id: {"kind": node.kind, "params": node.params} for node_id, node in nodes.items()},
        "connections": [conn.to_json() for conn in connections],
    }


class Budgets:
    def __init__(self, limits: BudgetLimits) -> None:
        self.limits = limits
        self._costs: dict[str, SessionCost] = {}  # running and starting sessions

    def __len__(self) -> int:
        """Sessions that count against ``max_sessions``: running, and being created."""
        return len(self._costs)

    def cost(self, session_id: str) -> SessionCost | None:
        return self._costs.get(session_id)

    def totals(self) -> tuple[int, int]:
        """Bytes and pixels a second of every counted session."""
        return sum(cost.bytes for cost in self._costs.values()), sum(cost.pixels_per_second for cost in self._costs.values())

    def check(
        self,
        session_id: str,
        pipeline: Mapping[str, Any],
        *,
        base: str = "",
        params_paths: Mapping[str, str] | None = None,
        request_path: str | None = None,
    ) -> SessionCost:
        """The cost of ``session_id`` with ``pipeline``, or ``resource_limit`` naming the field (pointers as
        ``protocol.budget.check_session`` takes them)."""
        previous = self._costs.get(session_id)
        others_bytes, others_rate = self.totals()
        if previous is not None:
            others_bytes -= previous.bytes
            others_rate -= previous.pixels_per_second
        return budget.check_session(
            pipeline,
            limits=self.limits,
            other_sessions_bytes=others_bytes,
            other_sessions_pixels_per_second=others_rate,
            previous=previous,
            base=base,
            params_paths=params_paths,
            request_path=request_path,
        )

    def check_new(self, session_id: str, pipeline: Mapping[str, Any], *, base: str, count_path: str) -> SessionCost:
        """A session to create: one more must fit ``max_sessions``, and its cost the budgets."""
        budget.check_session_count(len(self._costs), limits=self.limits, path=count_path)
        return self.check(session_id, pipeline, base=base)

    @contextlib.contextmanager
    def reserve(self, session_id: str, cost: SessionCost) -> Iterator[None]:
        """``cost`` is the session's from now on; if the block raises, it goes back to what it was."""
        previous = self._costs.get(session_id)
        self._costs[session_id] = cost
        try:
            yield
        except BaseException:
            if previous is None:
                self._costs.pop(session_id, None)
            else:
                self._costs[session_id] = previous
            raise

    @staticmethod
    def cost_of(pipeline: Mapping[str, Any]) -> SessionCost:
        """What a pipeline costs, unchecked (a session as the store holds it after a revert)."""
        return budget.session_cost(pipeline)

    def set(self, session_id: str, cost: SessionCost) -> None:
        self._costs[session_id] = cost

    def forget(self, session_id: str) -> None:
        self._costs.pop(session_id, None)
