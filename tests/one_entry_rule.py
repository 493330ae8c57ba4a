"""The masking rule that PROTOCOL.md section 5 rejects, as a model for the tests that show what it gets wrong.

It keeps one pending entry per pointer, the latest: a refusal of that entry
uncovers the server's state even when an older entry of the same pointer is
still unacknowledged, so the value flickers back until the paced event that
acknowledges the older entry arrives. A test swaps it in for
``compositord.protocol.causal.NodeMask`` (``ClientCausalState`` makes its
masks through that name), so the client library and the simulated clients run
it unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from compositord.protocol import causal


class OneEntryPerPointerMask(causal.NodeMask):
    __slots__ = ()

    def edit(self, leaves: Mapping[str, Any], rev: int) -> None:
        for ptr in leaves:
            self.pending.pop(ptr, None)
        super().edit(leaves, rev)
