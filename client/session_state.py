"""The causal state of every session a client sees, under the one nonce of its current connection.

A thin layer over :class:`compositord.protocol.causal.ClientCausalState`
(one per session: node ids are unique within a session), that reads the
payloads of events and ``pipeline`` responses. Sans-IO like the protocol
package: the connection feeds it, tests drive it directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from compositord.protocol import pointer
from compositord.protocol.causal import ACKS_KEY, PARAMS_CHANNEL, VIEW_CHANNEL, ClientCausalState, ack_map, new_nonce
from compositord.protocol.envelope import Event
from compositord.protocol.errors import ErrorCode, RemoteProtocolError

STATE_EVENTS = {"nodeparamschanged": ("params", PARAMS_CHANNEL), "nodeviewdataupdated": ("data", VIEW_CHANNEL)}


def _string(payload: Mapping[str, Any], key: str, base: str = "/payload") -> str:
    value = payload.get(key)
    if not isinstance(value, str):
        path = pointer.join(base, key)
        raise RemoteProtocolError(ErrorCode.BAD_ENVELOPE, f"{path}: must be a string", path)
    return value


def _string_or_none(payload: Mapping[str, Any], key: str) -> str | None:
    value = payload.get(key)
    return value if isinstance(value, str) else None


def _mapping(payload: Mapping[str, Any], key: str, base: str = "/payload") -> Mapping[str, Any]:
    value = payload.get(key)
    if not isinstance(value, Mapping):
        path = pointer.join(base, key)
        raise RemoteProtocolError(ErrorCode.BAD_ENVELOPE, f"{path}: must be an object", path)
    return value


class SessionStates:
    def __init__(self, nonce: str | None = None) -> None:
        self._nonce = nonce if nonce is not None else new_nonce()
        self._sessions: dict[str, ClientCausalState] = {}

    @property
    def nonce(self) -> str:
        return self._nonce

    def session_ids(self) -> list[str]:
        return sorted(self._sessions)

    def session(self, session_id: str) -> ClientCausalState:
        state = self._sessions.get(session_id)
        if state is None:
            state = self._sessions[session_id] = ClientCausalState(self._nonce)
        return state

    def forget_session(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def shown(self, session_id: str, node_id: str, channel: str = PARAMS_CHANNEL) -> Any:
        return self.session(session_id).shown(node_id, channel)

    def apply_event(self, event: Event) -> tuple[str | None, str | None, str | None, Any]:
        """Feed one event; returns ``(session_id, node_id, channel, shown)`` (None where it does not apply).

        A malformed state event raises :class:`RemoteProtocolError` and changes nothing.
        """
        payload = event.payload
        if event.event in STATE_EVENTS:
            key, channel = STATE_EVENTS[event.event]
            state_session_id, state_node_id = _string(payload, "session_id"), _string(payload, "node_id")
            data = _mapping(payload, key)
            shown = self.session(state_session_id).on_event(state_node_id, channel, data, path=pointer.join("/payload", key))
            return state_session_id, state_node_id, channel, shown
        session_id, node_id = _string_or_none(payload, "session_id"), _string_or_none(payload, "node_id")
        if event.event == "noderemoved" and session_id is not None and node_id is not None:
            if session_id in self._sessions:
                self._sessions[session_id].forget_node(node_id)
        elif event.event == "sessiondestroyed" and session_id is not None:
            self.forget_session(session_id)
        return session_id, node_id, None, None

    def apply_pipeline(self, payload: Mapping[str, Any]) -> str:
        """Feed a ``pipeline`` response (a resync): every node's params and view data; returns the session id.

        Nodes the session no longer has are forgotten. Pending values stay: the
        pipeline's acks (when it carries them) drop those already processed, and
        its ``retired_acks`` those of earlier nonces (rule C4, after a reconnect).
        """
        session_id = _string(payload, "session_id")
        nodes = payload.get("nodes")
        if not isinstance(nodes, Mapping):
            raise RemoteProtocolError(ErrorCode.BAD_ENVELOPE, "/payload/nodes: must be an object", "/payload/nodes")
        for node_id, node in nodes.items():
            base = pointer.join("/payload/nodes", node_id)
            if not isinstance(node, Mapping):
                raise RemoteProtocolError(ErrorCode.BAD_ENVELOPE, f"{base}: must be an object", base)
            # check every node before changing anything
            if not isinstance(node.get("params"), Mapping):
                path = pointer.join(base, "params")
                raise RemoteProtocolError(ErrorCode.BAD_ENVELOPE, f"{path}: must be an object", path)
            for key in ("view_data", "acks", "view_acks"):
                if node.get(key) is not None and not isinstance(node[key], Mapping):
                    path = pointer.join(base, key)
                    raise RemoteProtocolError(ErrorCode.BAD_ENVELOPE, f"{path}: must be an object", path)
            if node.get("retired_acks") is not None:
                ack_map(node["retired_acks"], pointer.join(base, "retired_acks"))
        state = self.session(session_id)
        for node_id, node in nodes.items():
            base = pointer.join("/payload/nodes", node_id)
            # The daemon sends each channel's acks beside its state ("acks", "view_acks"), keeping the
            # exported params free of "_" keys; laid in as "_acks" they drop the pending values already processed.
            params = {**node["params"], ACKS_KEY: node["acks"]} if node.get("acks") is not None else node["params"]
            state.on_event(
                node_id, PARAMS_CHANNEL, params, path=pointer.join(base, "params"), retired_acks=node.get("retired_acks")
            )
            view = node.get("view_data")
            if view is not None:
                if node.get("view_acks") is not None:
                    view = {**view, ACKS_KEY: node["view_acks"]}
                state.on_event(node_id, VIEW_CHANNEL, view, path=pointer.join(base, "view_data"))
        for node_id in state.node_ids():
            if node_id not in nodes:
                state.forget_node(node_id)
        return session_id

    def refused(self, session_id: str, node_id: str, rev: int) -> None:
        if session_id in self._sessions:
            self._sessions[session_id].on_refused(node_id, rev)

    def reconnected(self, nonce: str | None = None) -> None:
        """A new connection: the new nonce everywhere; pending values wait, masked, for the resync (rule C4)."""
        self._nonce = nonce if nonce is not None else new_nonce()
        for state in self._sessions.values():
            state.reconnected(self._nonce)

    def take_resend(self) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """After the resync: ``{session: {node: [values per message]}}`` the server had not processed, to re-send."""
        resend = {session_id: state.take_resend() for session_id, state in self._sessions.items()}
        return {session_id: nodes for session_id, nodes in resend.items() if nodes}
