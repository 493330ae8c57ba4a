"""Causal consistency of edits: the rules of PROTOCOL.md section 5, both sides.

Stamps
------
A client makes a nonce (UUID v4) for each connection, new at every
(re)connect, and keeps a revision counter per node that starts at 0 for each
nonce. Every tune it sends carries ``_sender`` = nonce and ``_rev`` = the
incremented counter (:class:`Stamp`, :func:`take_stamp`).

Server rules (:class:`AckBook` keeps S2, S5 and S6; the daemon keeps the rest)
-------------------------------------------------------------------------------
Rule S1: per node, updates are applied in the order the server receives them.

Rule S2: per node and per channel (``params``: the store; ``view``: the render
loop) the server keeps ``acks``: for each connected sender, the highest
``_rev`` it has processed from that sender. A ``_rev`` not above the sender's
current ack is refused with ``conflict`` (it can only be a replay).

Rule S3: ``nodeparamschanged`` is emitted for every applied change, with the
causing stamp and the whole ``acks`` map.

Rule S4: the render loop latches all pending updates of a node at the start of
a frame; it emits view data when the layout changed and after a frame that
applied a stamped update. Each emission carries the ``acks`` as of that frame;
``_sender``/``_rev`` name the last stamped update applied in that frame and are
absent when the emission has no stamped cause: a server-caused emission never
carries a stale stamp.

Rule S5: a sender's entry leaves ``acks`` when its connection closes.

Rule S7 (docs/PROTOCOL.md 5.1): in the params channel the
entry S5 removes is kept as a *retired ack* (sender -> highest processed rev)
for a grace period (:data:`RETIRED_ACKS_GRACE_S`), at most
:data:`MAX_RETIRED_ACKS` per node, oldest evicted first. Events never carry
it; ``getpipeline`` node entries carry it as ``retired_acks``.

Rule S6: a stamped message that is refused (invalid params, conflict, not
found) still counts as processed: the sender's ack advances to its ``_rev``,
and the sender gets an ``error`` response carrying ``_sender`` and ``_rev``.

Client rule (masking; :class:`NodeMask`, :class:`ClientCausalState`)
--------------------------------------------------------------------
Per node and channel the client keeps the last server state it received and
``pending``: for each JSON pointer it changed locally (such as
``/layers/in_1/opacity``), every value still in flight there, each with the
``_rev`` of the message that carried it, in rev order. On every event:

Rule C1: ``ack = _acks[my nonce]`` (0 if absent); drop every pending entry
with rev <= ack.

Rule C2: store the event's state as the server state.

Rule C3: show the server state with the newest remaining entry of each
pointer laid over it, those entries in rev order (a replace at the pointer
``""`` wipes what older entries set; newer ones lay over it).

On an ``error`` that names one of its own revs, the client drops the entries
of that rev, and only those: each pointer shows its newest remaining entry,
the server's value only when none is left. Not only the newest entry of a
pointer is kept because an error is answered at once while the event that
acknowledges an earlier rev may wait for the end of the frame (pacing): the
refusal of rev 2 must uncover the still unacknowledged rev 1 of the same
pointer, not a server state older than rev 1.

Bound: at most :data:`MAX_PENDING_PER_POINTER` entries per pointer; the
oldest goes when a newer one comes. Only when more than that many edits of one
pointer are in flight and every kept one is refused before the ack of a
dropped one does the pointer show the server's older state until that ack.

Rule C4 (reconnect; docs/PROTOCOL.md 5.2): on reconnect the
client takes a new nonce, and its pending entries stay masked, kept under the
old nonce (:meth:`NodeMask.retire_pending`) by the same rules. It resyncs with
``getpipeline`` FIRST; per node, the old nonce's ack there (the larger of
``acks`` and ``retired_acks``; 0 if absent) drops every entry with rev <= it:
the server processed those (applied or refused), and applying one again would
overwrite newer edits of other clients. Only then it re-sends the rest under
the new nonce, every remaining entry in the message it first travelled in,
oldest message first: the server then processes them in the order it would
have without the drop, and a refusal of a re-sent value uncovers the re-sent
value before it. A server without S7 sends no ``retired_acks``: everything is
re-sent, as PROTOCOL.md section 5 says.

The client never looks at ``_sender``/``_rev`` of an event: only ``_acks``
matters. That is why another client's change is never hidden (no event is
dropped) and a layout the server caused always shows.

Everything here is pure and sans-IO: plain data in, plain data out.
"""

from __future__ import annotations

import copy
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from compositord.protocol import pointer
from compositord.protocol.errors import ErrorCode, LocalProtocolError, RemoteProtocolError

PARAMS_CHANNEL = "params"
VIEW_CHANNEL = "view"
CHANNELS = (PARAMS_CHANNEL, VIEW_CHANNEL)

SENDER_KEY = "_sender"
REV_KEY = "_rev"
ACKS_KEY = "_acks"
SEQ_KEY = "_seq"

MAX_SENDER_LENGTH = 128
# Client masking: entries kept per pointer (and nonce). A slider sending at 60 Hz fills this only when
# acks lag by more than a second.
MAX_PENDING_PER_POINTER = 64
# Rule S7: how long (seconds) and how many per node a closed connection's params acks are kept.
RETIRED_ACKS_GRACE_S = 300.0
MAX_RETIRED_ACKS = 4096
# Revs travel as JSON numbers; a browser client holds them in a double.
MAX_REV = 2**53


# --------------------------------------------------------------------------- stamps


def _check_sender(sender: object, path: str) -> str:
    if not isinstance(sender, str):
        raise RemoteProtocolError(ErrorCode.BAD_ENVELOPE, f"{path}: _sender must be a string", path)
    if not 0 < len(sender) <= MAX_SENDER_LENGTH:
        raise RemoteProtocolError(
            ErrorCode.BAD_ENVELOPE,
            f"{path}: _sender must have 1..{MAX_SENDER_LENGTH} characters, got {len(sender)}",
            path,
        )
    return sender


def _check_rev(rev: object, path: str) -> int:
    # bool is an int subclass; `true` is not a revision.
    if isinstance(rev, bool) or not isinstance(rev, int):
        raise RemoteProtocolError(ErrorCode.BAD_ENVELOPE, f"{path}: _rev must be an integer", path)
    if not 1 <= rev <= MAX_REV:
        raise RemoteProtocolError(ErrorCode.BAD_ENVELOPE, f"{path}: _rev must be in 1..2**53, got {rev}", path)
    return rev


@dataclass(frozen=True)
class Stamp:
    """``(_sender, _rev)`` of one tune; an invalid stamp cannot exist.

    The constructor raises :class:`RemoteProtocolError` (``bad_envelope``) with
    the path ``/_sender`` or ``/_rev``; :func:`take_stamp` prefixes the path of
    the message the stamp came from.
    """

    sender: str
    rev: int

    def __post_init__(self) -> None:
        _check_sender(self.sender, "/" + SENDER_KEY)
        _check_rev(self.rev, "/" + REV_KEY)

    def to_json(self) -> dict[str, Any]:
        return {SENDER_KEY: self.sender, REV_KEY: self.rev}


def take_stamp(message: Mapping[str, Any], *, path: str = "") -> tuple[Stamp | None, dict[str, Any]]:
    """Split a tune message into its stamp and the rest, with every ``_`` key stripped at any depth.

    ``_sender`` and ``_rev`` come together or not at all. ``path`` is the JSON
    pointer of ``message`` inside the envelope (for example
    ``/payload/message/PatchParams``), so errors name the exact field.
    """
    if not isinstance(message, Mapping):
        raise RemoteProtocolError(ErrorCode.BAD_ENVELOPE, f"{path or '/'}: must be an object", path)
    has_sender = SENDER_KEY in message
    has_rev = REV_KEY in message
    stamp: Stamp | None = None
    if has_sender != has_rev:
        missing = REV_KEY if has_sender else SENDER_KEY
        present = SENDER_KEY if has_sender else REV_KEY
        missing_path = pointer.join(path, missing)
        raise RemoteProtocolError(ErrorCode.BAD_ENVELOPE, f"{missing_path}: {present} given without {missing}", missing_path)
    if has_sender:
        sender = _check_sender(message[SENDER_KEY], pointer.join(path, SENDER_KEY))
        rev = _check_rev(message[REV_KEY], pointer.join(path, REV_KEY))
        stamp = Stamp(sender, rev)
    return stamp, strip_private(message)


def strip_private(value: Any) -> Any:
    """A copy of ``value`` without keys that start with ``_``, at any depth (also inside lists).

    Never mutates its input; containers are always copied, scalars shared.
    """
    # A client strips every event's whole state: scalars (most values) are taken without a call.
    if pointer.is_object(value):
        return {
            key: child if type(child) in _SCALARS else strip_private(child)
            for key, child in value.items()
            if not (isinstance(key, str) and key[:1] == "_")
        }
    if isinstance(value, list):
        return [item if type(item) in _SCALARS else strip_private(item) for item in value]
    return value


_SCALARS = frozenset({str, int, float, bool, type(None)})


# --------------------------------------------------------------------------- merge patch


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch; pure: returns a new document, mutates neither argument.

    Subtrees of ``target`` that the patch does not touch are shared with the
    result; values taken from ``patch`` are copied.
    """
    if not pointer.is_object(patch):
        return copy.deepcopy(patch)
    result = dict(target) if pointer.is_object(target) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def patch_leaves(patch: Mapping[str, Any]) -> dict[str, Any]:
    """The values a merge patch sets, by JSON pointer (``None`` = delete, ``{}`` = make it an object).

    The empty patch ``{}`` sets nothing and gives ``{}``.
    """
    if not patch:
        return {}
    return dict(pointer.leaves(patch))


def leaves_to_patch(leaves: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch that sets every ``pointer -> value`` of ``leaves`` (inverse of :func:`patch_leaves`)."""
    patch: dict[str, Any] = {}
    for ptr, value in leaves.items():
        tokens = pointer.split(ptr)
        if not tokens:
            raise LocalProtocolError("the root pointer is a replace, not a patch")
        node = patch
        for token in tokens[:-1]:
            node = node.setdefault(token, {})
        node[tokens[-1]] = copy.deepcopy(value)
    return patch


# --------------------------------------------------------------------------- server side


class AckBook:
    """Server side of rules S2, S5, S6 and S7 for one node and one channel.

    ``check`` before applying a stamped update, then ``record`` once it is
    applied, or ``refuse`` when it was refused for any reason (S6). The map
    holds one entry per connected sender; ``forget`` (or ``retire``, which also
    keeps the entry as a retired ack, S7) on disconnect keeps it bounded by the
    number of connections (S5). Times are the caller's monotonic clock.
    """

    __slots__ = ("_acks", "_max_retired", "_retired", "_retired_grace_s")

    def __init__(self, *, retired_grace_s: float = RETIRED_ACKS_GRACE_S, max_retired: int = MAX_RETIRED_ACKS) -> None:
        if not retired_grace_s > 0:
            raise LocalProtocolError(f"retired_grace_s must be positive, got {retired_grace_s!r}")
        if isinstance(max_retired, bool) or not isinstance(max_retired, int) or max_retired < 1:
            raise LocalProtocolError(f"max_retired must be a positive integer, got {max_retired!r}")
        self._acks: dict[str, int] = {}
        # sender -> (ack, when retired); insertion order is retirement order, so expiry pops from the front.
        self._retired: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._retired_grace_s = retired_grace_s
        self._max_retired = max_retired

    def ack_of(self, sender: str) -> int:
        return self._acks.get(sender, 0)

    def check(self, stamp: Stamp, *, path: str = "") -> None:
        """Raise ``conflict`` when ``stamp`` is not above its sender's ack (a replay, S2)."""
        current = self.ack_of(stamp.sender)
        if stamp.rev <= current:
            rev_path = pointer.join(path, REV_KEY)
            raise RemoteProtocolError(
                ErrorCode.CONFLICT,
                f"{rev_path}: _rev {stamp.rev} already processed for this sender (ack {current})",
                rev_path,
            )

    def record(self, stamp: Stamp) -> None:
        """The update with ``stamp`` was applied."""
        if stamp.rev <= self.ack_of(stamp.sender):
            raise LocalProtocolError(f"record of {stamp} without check: ack is {self.ack_of(stamp.sender)}")
        self._acks[stamp.sender] = stamp.rev

    def refuse(self, stamp: Stamp) -> None:
        """The update with ``stamp`` was refused; it still counts as processed (S6)."""
        if stamp.rev > self.ack_of(stamp.sender):
            self._acks[stamp.sender] = stamp.rev

    def forget(self, sender: str) -> None:
        """The sender's connection closed (S5), and nobody asks for its retired ack (the view channel)."""
        self._acks.pop(sender, None)

    def retire(self, sender: str, now: float) -> None:
        """The sender's connection closed (S5); keep its ack as a retired ack for the grace period (S7)."""
        rev = self._acks.pop(sender, None)
        if rev is None:
            return
        self._retired.pop(sender, None)
        self._retired[sender] = (rev, now)
        self._expire(now)
        while len(self._retired) > self._max_retired:
            self._retired.popitem(last=False)

    def retired_as_dict(self, now: float) -> dict[str, int]:
        """The retired acks still within the grace period, as sent in ``retired_acks`` (S7)."""
        self._expire(now)
        return {sender: rev for sender, (rev, _when) in self._retired.items()}

    def _expire(self, now: float) -> None:
        while self._retired:
            _sender, (_rev, when) = next(iter(self._retired.items()))
            if now - when < self._retired_grace_s:
                return
            self._retired.popitem(last=False)

    def as_dict(self) -> dict[str, int]:
        """A copy of the acks map, as sent in ``_acks``."""
        return dict(self._acks)

    def __len__(self) -> int:
        return len(self._acks)


# --------------------------------------------------------------------------- client side


def _set_merging(document: Any, ptr: str, value: Any) -> Any:
    """What a merge patch setting ``value`` at ``ptr`` does (params channel: objects only)."""
    if ptr == "":
        return copy.deepcopy(value)  # a replace (UpdateParams) pending at the root
    return merge_patch(document, leaves_to_patch({ptr: value}))


def _set_by_pointer(document: Any, ptr: str, value: Any) -> Any:
    """Set ``value`` at ``ptr``, following list indices (view channel: layout has lists)."""
    if value is None:
        tokens = pointer.split(ptr)
        if not tokens:
            return None
        parent_ptr = pointer.join("", *tokens[:-1])
        parent = pointer.resolve(document, parent_ptr, None)
        if isinstance(parent, Mapping) and tokens[-1] in parent:
            trimmed = {k: v for k, v in parent.items() if k != tokens[-1]}
            return pointer.with_value(document, parent_ptr, trimmed)
        return document
    return pointer.with_value(document, ptr, copy.deepcopy(value))


def _independent(pointers: Iterable[str]) -> bool:
    """No pointer is the root, appears twice, or lies inside another of them."""
    seen: set[str] = set()
    for ptr in pointers:
        if ptr == "" or ptr in seen:
            return False
        seen.add(ptr)
    for ptr in seen:
        cut = ptr.rfind("/")
        while cut > 0:
            ptr = ptr[:cut]
            if ptr in seen:
                return False
            cut = ptr.rfind("/")
    return True


# Per JSON pointer, the values in flight there, oldest first: ``[(rev, value), ...]``.
PendingEntries = dict[str, list[tuple[int, Any]]]


def _on_path(document: Any, tokens: list[str]) -> Any:
    """``document`` with, in each object on the way to ``tokens``, only the key on the way (the rest shared)."""
    if not tokens or not pointer.is_object(document):
        return document
    head = tokens[0]
    return {head: _on_path(document[head], tokens[1:])} if head in document else {}


def _on_same_path(ptr: str, other: str) -> bool:
    """One pointer is the other or lies inside it: a merge patch at one can change what is at the other."""
    return ptr == other or other.startswith(ptr + "/") or ptr.startswith(other + "/") or not ptr or not other


def _entries_after(entries: PendingEntries, ack: int) -> PendingEntries:
    """The entries above ``ack`` (C1), pointers left without any dropped."""
    kept = {ptr: [entry for entry in values if entry[0] > ack] for ptr, values in entries.items()}
    return {ptr: values for ptr, values in kept.items() if values}


class NodeMask:
    """Client masking for one node and one channel (rules C1-C4).

    ``pending`` maps a JSON pointer into the channel's state to every value
    in flight there, ``[(rev, value), ...]`` oldest first, ``rev`` being the
    message that carried it. The pointer ``""`` is a replace of the whole
    document (``UpdateParams``); a newer entry of another pointer lays over it.
    In the params channel values lay over with merge-patch semantics (``None``
    deletes); in the view channel pointers may go through list indices (layout
    ``layers``). ``retired`` holds the entries of earlier nonces, oldest nonce
    first, until a resync decides them (C4).
    """

    __slots__ = ("channel", "pending", "retired", "server_state")

    def __init__(self, channel: str = PARAMS_CHANNEL, server_state: Any = None) -> None:
        if channel not in CHANNELS:
            raise LocalProtocolError(f"unknown channel {channel!r}; expected one of {CHANNELS}")
        self.channel = channel
        self.server_state: Any = {} if server_state is None else server_state
        self.pending: PendingEntries = {}
        self.retired: list[tuple[str, PendingEntries]] = []

    def edit(self, leaves: Mapping[str, Any], rev: int) -> None:
        """Local values sent (or about to be sent) in the message with ``rev``, above every rev pending."""
        if isinstance(rev, bool) or not isinstance(rev, int) or rev < 1:
            raise LocalProtocolError(f"rev must be a positive integer, got {rev!r}")
        for ptr in leaves:
            pointer.split(ptr)  # a bad pointer is our own bug: fail here, not at shown()
            entries = self.pending.get(ptr)
            if entries and entries[-1][0] >= rev:
                # Rev order is what C1 and the refusal rule rely on; a stamp is never reused.
                raise LocalProtocolError(f"rev {rev} at {ptr!r} is not above its pending rev {entries[-1][0]}")
        for ptr, value in leaves.items():
            entries = self.pending.setdefault(ptr, [])
            entries.append((rev, value))
            if len(entries) > MAX_PENDING_PER_POINTER:
                del entries[0]  # the bound: a newer entry of this pointer still masks what it set

    def on_server_state(
        self,
        state: Any,
        acks: Mapping[str, int],
        my_sender: str,
        retired_acks: Mapping[str, int] | None = None,
    ) -> None:
        """An event (or a resync) brought the server's state of this channel (C1, C2; C4 with ``retired_acks``)."""
        self.pending = _entries_after(self.pending, acks.get(my_sender, 0))
        still_retired = []
        for sender, entries in self.retired:
            kept = _entries_after(entries, max(acks.get(sender, 0), (retired_acks or {}).get(sender, 0)))
            if kept:
                still_retired.append((sender, kept))
        self.retired = still_retired
        self.server_state = strip_private(state)

    def on_refused(self, rev: int) -> None:
        """The server refused the message with ``rev``: its entries go, uncovering older pending ones."""
        self.pending = {ptr: kept for ptr, entries in self.pending.items() if (kept := [e for e in entries if e[0] != rev])}

    def shown(self) -> Any:
        """The server state with the newest entry of each pointer laid over it, retired nonces first (C3)."""
        return self._shown_over(self.server_state)

    def shown_at(self, ptr: str, default: Any = None) -> Any:
        """``pointer.resolve(self.shown(), ptr, default)``, without making the whole shown document.

        In the params channel every overlay is a merge patch, which changes an object key by key: what
        lies beside the path to ``ptr`` never changes what lies on it, so the overlays are laid over
        the server state cut down to that path (a client asks this for every edit it predicts).
        """
        if self.channel != PARAMS_CHANNEL:
            return pointer.resolve(self.shown(), ptr, default)
        state = _on_path(self.server_state, pointer.split(ptr))
        return pointer.resolve(self._shown_over(state, lambda pending: _on_same_path(pending, ptr)), ptr, default)

    def _shown_over(self, state: Any, laid: Callable[[str], bool] | None = None) -> Any:
        """``state`` with the newest entry of each pointer laid over it (only the pointers ``laid`` keeps)."""
        overlays: list[tuple[str, Any]] = []
        for entries in [entries for _sender, entries in self.retired] + [self.pending]:
            newest = [(values[-1][0], ptr, values[-1][1]) for ptr, values in entries.items() if laid is None or laid(ptr)]
            overlays += [(ptr, value) for _rev, ptr, value in sorted(newest, key=lambda item: item[0])]
        if not overlays:
            return state
        if self.channel == PARAMS_CHANNEL and _independent(ptr for ptr, _value in overlays):
            # Merge patches of pointers that neither repeat nor contain one another commute: one patch of
            # them all does what laying them one by one does, copying each container on the way once
            # instead of once per pointer (a client does this for every event while it drags).
            return merge_patch(state, leaves_to_patch(dict(overlays)))
        document = state
        setter = _set_merging if self.channel == PARAMS_CHANNEL else _set_by_pointer
        for ptr, value in overlays:
            document = setter(document, ptr, value)
        return document

    def retire_pending(self, old_sender: str) -> None:
        """A reconnect: the pending entries of ``old_sender`` wait, still shown, for the resync (C4)."""
        if self.pending:
            # A value of a later nonce supersedes an older nonce's values at its pointer (a replace, all
            # of them): re-sending an older one, undecided, could overwrite the later one, processed.
            newer = self.pending
            self.retired = [
                (sender, kept)
                for sender, entries in self.retired
                if "" not in newer and (kept := {ptr: values for ptr, values in entries.items() if ptr not in newer})
            ]
            self.retired.append((old_sender, newer))
        self.pending = {}

    def take_pending_for_resend(self) -> list[dict[str, Any]]:
        """Empty ``retired`` and return what to send again after a reconnect's resync, one dict per message.

        Every remaining entry, in the message that first carried it, messages
        oldest first: the server processes them in the order it would have
        without the reconnect, so a refused re-sent value uncovers the one
        before it (C4), and a value refused takes down only the values it was
        first sent with. ``pending`` (values of the current nonce, already
        sent) stays as it is.
        """
        by_message: dict[tuple[int, int], dict[str, Any]] = {}
        for generation, (_sender, entries) in enumerate(self.retired):
            for ptr, values in entries.items():
                for rev, value in values:
                    by_message.setdefault((generation, rev), {})[ptr] = value
        self.retired = []
        return [by_message[message] for message in sorted(by_message)]


def new_nonce() -> str:
    return str(uuid.uuid4())


def _acks_from(data: Mapping[str, Any], path: str) -> dict[str, int]:
    return ack_map(data.get(ACKS_KEY, {}), pointer.join(path, ACKS_KEY))


def ack_map(acks: Any, acks_path: str) -> dict[str, int]:
    """A checked ``{sender: rev}`` map as the server sends it (``_acks``, ``acks``, ``retired_acks``)."""
    if not isinstance(acks, Mapping):
        raise RemoteProtocolError(ErrorCode.BAD_ENVELOPE, f"{acks_path}: must be an object", acks_path)
    for sender, rev in acks.items():
        if isinstance(rev, bool) or not isinstance(rev, int):
            rev_path = pointer.join(acks_path, sender)
            raise RemoteProtocolError(ErrorCode.BAD_ENVELOPE, f"{rev_path}: must be an integer", rev_path)
    return dict(acks)


class ClientCausalState:
    """Everything a client keeps for section 5: its nonce, rev counters, and a mask per node and channel.

    View prediction: a params patch that sets a layer's ``rect`` field
    (``/layers/<pin>/rect/<x|y|width|height>``) is also predicted in the view
    channel as ``/layers/<index>/<field>`` -- only when the shown params say
    ``aspect_fit`` is ``false`` for that layer (then the layout rect is the
    rect as given) and the last layout lists that layer. Everything else in the
    view channel is the server's state as received.
    """

    def __init__(self, nonce: str | None = None) -> None:
        self._nonce = nonce if nonce is not None else new_nonce()
        _check_sender(self._nonce, "/" + SENDER_KEY)
        self._revs: dict[str, int] = {}
        self._masks: dict[tuple[str, str], NodeMask] = {}

    @property
    def nonce(self) -> str:
        return self._nonce

    def last_rev(self, node_id: str) -> int:
        return self._revs.get(node_id, 0)

    def stamp_for(self, node_id: str) -> Stamp:
        """The stamp of the next message to ``node_id``."""
        rev = self._revs.get(node_id, 0) + 1
        self._revs[node_id] = rev
        return Stamp(self._nonce, rev)

    def mask(self, node_id: str, channel: str = PARAMS_CHANNEL) -> NodeMask:
        key = (node_id, channel)
        found = self._masks.get(key)
        if found is None:
            found = self._masks[key] = NodeMask(channel)
        return found

    def node_ids(self) -> list[str]:
        """Every node with a mask or a rev counter."""
        return sorted({node_id for node_id, _channel in self._masks} | set(self._revs))

    def has_mask(self, node_id: str, channel: str = PARAMS_CHANNEL) -> bool:
        return (node_id, channel) in self._masks

    def shown(self, node_id: str, channel: str = PARAMS_CHANNEL) -> Any:
        return self.mask(node_id, channel).shown()

    def edit_patch(self, node_id: str, patch: Mapping[str, Any]) -> Stamp:
        """Stamp a ``PatchParams`` and mask its values; returns the stamp to send."""
        stamp = self.stamp_for(node_id)
        leaves = patch_leaves(patch)
        self._predict_view(node_id, leaves, stamp.rev)
        self.mask(node_id, PARAMS_CHANNEL).edit(leaves, stamp.rev)
        return stamp

    def edit_replace(self, node_id: str, params: Mapping[str, Any]) -> Stamp:
        """Stamp an ``UpdateParams`` and mask the whole document; returns the stamp to send."""
        stamp = self.stamp_for(node_id)
        self.mask(node_id, PARAMS_CHANNEL).edit({"": strip_private(params)}, stamp.rev)
        return stamp

    def on_event(
        self,
        node_id: str,
        channel: str,
        data: Mapping[str, Any],
        *,
        path: str = "",
        retired_acks: Mapping[str, int] | None = None,
    ) -> Any:
        """An event's state (``params`` or view ``data``, with ``_acks``) arrived; returns the shown state.

        A resync passes the node's ``retired_acks`` too (rule C4; checked by the caller, see :func:`ack_map`).
        """
        if not isinstance(data, Mapping):
            raise RemoteProtocolError(ErrorCode.BAD_ENVELOPE, f"{path or '/'}: must be an object", path)
        acks = _acks_from(data, path)
        mask = self.mask(node_id, channel)
        mask.on_server_state(data, acks, self._nonce, retired_acks)
        return mask.shown()

    def on_refused(self, node_id: str, rev: int) -> None:
        """An ``error`` named our ``rev`` for ``node_id``: drop its pending values in every channel."""
        for channel in CHANNELS:
            if (node_id, channel) in self._masks:
                self._masks[(node_id, channel)].on_refused(rev)

    def forget_node(self, node_id: str) -> None:
        for channel in CHANNELS:
            self._masks.pop((node_id, channel), None)
        self._revs.pop(node_id, None)

    def reconnected(self, new_nonce_value: str | None = None) -> None:
        """Switch to a new nonce with counters at 0; pending values stay masked under the old nonce (C4).

        The caller resyncs (``getpipeline``, feeding each node's ``retired_acks``
        to :meth:`on_event`), then calls :meth:`take_resend` and re-sends with
        :meth:`edit_patch` / :meth:`edit_replace` under the new nonce.
        """
        nonce = new_nonce_value if new_nonce_value is not None else new_nonce()
        _check_sender(nonce, "/" + SENDER_KEY)
        if nonce == self._nonce:
            raise LocalProtocolError("a reconnect needs a nonce that was not used before")
        old_nonce, self._nonce = self._nonce, nonce
        self._revs.clear()
        for mask in self._masks.values():
            mask.retire_pending(old_nonce)

    def take_resend(self) -> dict[str, list[dict[str, Any]]]:
        """After the resync: the params values still undecided, per node, to re-send (C4).

        Per node, one ``{pointer: value}`` per message, oldest first (see
        :meth:`NodeMask.take_pending_for_resend`); ``""`` is a replace.
        Retired view predictions are dropped: re-sending the params predicts them again.
        """
        resend: dict[str, list[dict[str, Any]]] = {}
        for (node_id, channel), mask in self._masks.items():
            groups = mask.take_pending_for_resend()
            if channel == PARAMS_CHANNEL and groups:
                resend[node_id] = groups
        return resend

    def _predict_view(self, node_id: str, leaves: Mapping[str, Any], rev: int) -> None:
        if not self.has_mask(node_id, VIEW_CHANNEL):
            return
        layout = self.mask(node_id, VIEW_CHANNEL).server_state
        layers = layout.get("layers") if isinstance(layout, Mapping) else None
        if not isinstance(layers, list):
            return
        index_of = {layer.get("id"): i for i, layer in enumerate(layers) if isinstance(layer, Mapping)}
        params = self.mask(node_id, PARAMS_CHANNEL)
        predicted: dict[str, Any] = {}
        for ptr, value in leaves.items():
            tokens = pointer.split(ptr)
            if len(tokens) != 4 or tokens[0] != "layers" or tokens[2] != "rect":
                continue
            pin, field = tokens[1], tokens[3]
            if field not in ("x", "y", "width", "height") or pin not in index_of:
                continue
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            aspect_fit_ptr = pointer.join("/layers", pin, "aspect_fit")
            leaf_aspect = leaves[aspect_fit_ptr] if aspect_fit_ptr in leaves else params.shown_at(aspect_fit_ptr)
            if leaf_aspect is not False:
                continue
            predicted[pointer.join("/layers", index_of[pin], field)] = value
        if predicted:
            self.mask(node_id, VIEW_CHANNEL).edit(predicted, rev)
