"""``sink::stream``: H.264 in MPEG-TS (or FLV) over the network, through PyAV, in a helper process.

What the bundled PyAV build can send: ``udp://`` and ``tcp://`` (MPEG-TS;
for UDP use ``?pkt_size=1316``, seven TS packets per datagram), ``rtmp://`` and
``rtmps://`` (``format: flv``). It has no SRT protocol, so an ``srt://`` URL is
refused with a node error that says so (the system ffmpeg has SRT: pipe a
``sink::y4m`` into it instead). The encoder runs with x264's ``zerolatency``
tune. UDP is fire-and-forget: a receiver that goes away costs nothing; a TCP
or RTMP peer that goes away is a write error, hence the node's error state.

The node in the engine is a :class:`StreamOutput` (``sinks/helper.py``): the
encoder and the network output (:class:`StreamSink`) run in a helper process,
because opening them can block inside FFmpeg with the GIL held. A URL with a
``listen`` option makes the output a server waiting for its peer: it may bind
only the hosts the operator allowed (``listen_hosts``: loopback by default),
and it shows ``connecting`` for as long as nobody connects.

Where a stream may go is the operator's choice (``allowed_stream_destinations``,
checked when the params are validated). What went wrong on the way is not the
client's business: whether a port was closed, filtered or answered with
garbage would make this sink a port scanner. So every failure to reach or
send to the destination is one node error, the same whatever the cause
(:data:`UNREACHABLE`); the cause goes to the log. A ``tcp://`` URL gets
FFmpeg's ``timeout`` (connect and each write, :data:`TCP_TIMEOUT_US`) unless
it names one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

from compositord.daemon.engine.api import LOOPBACK_HOSTS
from compositord.daemon.engine.sinks.base import SinkError, SinkFrame
from compositord.daemon.engine.sinks.encoding import EncoderSink
from compositord.daemon.engine.sinks.helper import HelperSink

log = logging.getLogger(__name__)

UNREACHABLE = "could not send the stream to the destination (it is closed, filtered or refused it; the daemon's log says which)"
TCP_TIMEOUT_US = 5_000_000

# Output protocols the bundled FFmpeg lacks (PyAV lists none; it fails only at the first write, with
# "Protocol not found"): refused up front so the node says why.
MISSING_PROTOCOLS = frozenset({"srt"})
# Network protocols only: FFmpeg would as gladly write ``file:``, ``pipe:`` or ``cache:`` URLs, which would
# bypass the output directory. The schema's pattern refuses them already; this holds for params that never
# passed it (rows stored by an older version).
NETWORK_SCHEMES = frozenset({"udp", "tcp", "rtmp", "rtmps", "srt"})


def where(params: dict[str, Any]) -> str:
    """scheme://host:port only: an RTMP path or a query may hold a stream key."""
    url = str(params["url"])
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0].split('?', 1)[0]}"


def is_listen_url(url: str) -> bool:
    """True when the URL makes FFmpeg wait for a peer to connect (``?listen``, ``?listen=1`` or ``=2``)."""
    values = parse_qs(urlsplit(url).query, keep_blank_values=True).get("listen")
    return values is not None and any(value.strip() not in ("0",) for value in values)


def target(params: dict[str, Any], listen_hosts: Iterable[str] = LOOPBACK_HOSTS) -> tuple[str, str, dict[str, str]]:
    """``(url, format, options)`` of a stream, or SinkError naming what is wrong with the params."""
    url = str(params["url"])
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in NETWORK_SCHEMES:
        shown = scheme or url.split(":", 1)[0][:16]
        raise SinkError(
            f"{shown!r} is not a network protocol: use udp://, tcp://, rtmp:// or rtmps://; files go through sink::file or sink::y4m"
        )
    if scheme in MISSING_PROTOCOLS:
        raise SinkError(
            f"this build of PyAV cannot send {scheme}:// (no {scheme} protocol in its FFmpeg); use udp://, tcp:// or rtmp://"
        )
    format_name = str(params.get("format", "mpegts"))
    if scheme in ("rtmp", "rtmps") and format_name != "flv":
        raise SinkError("rtmp:// carries FLV: set format to flv")
    if is_listen_url(url):
        host = (urlsplit(url).hostname or "").lower()
        allowed = {allowed_host.lower().strip("[]") for allowed_host in listen_hosts}
        if host not in allowed:
            raise SinkError(
                f"a listen URL may bind only {', '.join(sorted(allowed))} (the operator's listen hosts), not {host or 'every interface'!r}"
            )
    if scheme == "tcp" and not is_listen_url(url):  # a listener waits for its peer on purpose, in the helper process
        url = with_tcp_timeout(url)
    return url, format_name, {}


def with_tcp_timeout(url: str) -> str:
    """``url`` with FFmpeg's tcp ``timeout`` option (microseconds) unless it has one."""
    base, _, query = url.partition("?")
    if any(key == "timeout" for key, _ in parse_qsl(query, keep_blank_values=True)):
        return url
    return f"{base}?{query + '&' if query else ''}timeout={TCP_TIMEOUT_US}"


class StreamSink(EncoderSink):
    """The encoder and the network output; runs in the helper process (``sinks/helper.py``)."""

    kind = "sink::stream"
    low_latency = True

    def where(self) -> str | None:
        return where(self.params)

    def target(self) -> tuple[str, str, dict[str, str]]:
        # The engine checked the listen host against the operator's list before starting this helper.
        url, format_name, options = target(self.params, listen_hosts=[urlsplit(str(self.params["url"])).hostname or ""])
        return url, format_name, options

    # Every network failure reads the same to clients; the details go to the log.

    def open(self, first: SinkFrame) -> None:
        self._guarded(super().open, first)

    def write(self, item: SinkFrame) -> None:
        self._guarded(super().write, item)

    def finish(self) -> None:
        self._guarded(super().finish)

    def _guarded(self, step: Any, *args: Any) -> None:
        try:
            step(*args)
        except SinkError:
            raise
        except Exception as exc:
            log.warning("%s %s (%s): %s", self.kind, self.node_id, self.where(), exc)
            raise SinkError(UNREACHABLE) from None


class StreamOutput(HelperSink):
    """The ``sink::stream`` node in the engine: checks the params, then feeds a helper running :class:`StreamSink`."""

    kind = "sink::stream"
    helper_kind = "sink::stream"
    queue_capacity = 4  # live: a late frame is worth little, so keep the backlog short

    def __init__(self, *args: Any, listen_hosts: Iterable[str] = LOOPBACK_HOSTS, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._listen_hosts = tuple(listen_hosts)
        self._waits_for_peer = is_listen_url(str(self.params["url"]))

    def where(self) -> str | None:
        return where(self.params)

    def check(self) -> None:
        target(self.params, self._listen_hosts)

    def _check_helper(self) -> None:
        # A helper that ended before its own error reached us (a peer that hung up can end it first) is
        # one more way of not reaching the destination: the same node error, the details in the log.
        try:
            super()._check_helper()
        except SinkError as exc:
            if str(exc).startswith("the helper process ended"):
                log.warning("%s %s (%s): %s", self.kind, self.node_id, self.where(), exc)
                raise SinkError(UNREACHABLE) from None
            raise
