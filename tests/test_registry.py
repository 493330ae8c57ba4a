"""engine/registry.py is the one map from node kind to engine implementation: it agrees with the
params schema (protocol/params.py) on which kinds are sources and which are sinks."""

from __future__ import annotations

from compositord.daemon.engine import registry
from compositord.protocol import params


def kinds_with_role(role: str) -> set[str]:
    return {kind for kind in params.NODE_KINDS if params.role(kind) == role}


def test_every_source_and_sink_kind_has_exactly_one_entry_and_every_entry_a_kind() -> None:
    sources = {kind for kind, entry in registry.IMPLEMENTATIONS.items() if isinstance(entry, registry.SourceKind)}
    sinks = {kind for kind, entry in registry.IMPLEMENTATIONS.items() if isinstance(entry, registry.SinkKind)}
    assert sources == kinds_with_role(params.SOURCE)
    assert sinks == kinds_with_role(params.SINK)
    # One entry per kind, and nothing else: no compositor (the engine itself), no kind the schema lacks.
    assert sources.isdisjoint(sinks)
    assert set(registry.IMPLEMENTATIONS) == sources | sinks
    assert kinds_with_role(params.COMPOSITOR) == {params.COMPOSITOR_KIND}


def test_lookups_answer_by_role() -> None:
    for kind in params.NODE_KINDS:
        role = params.role(kind)
        assert (registry.source(kind) is not None) == (role == params.SOURCE), kind
        assert (registry.sink(kind) is not None) == (role == params.SINK), kind
    assert registry.source("video::nonexistent") is None and registry.sink("video::nonexistent") is None
