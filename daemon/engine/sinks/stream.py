"""``sink::stream``: H.264 in MPEG-TS (or FLV) over the network, through PyAV.

What the bundled PyAV build can send: ``udp://`` and ``tcp://`` (MPEG-TS;
for UDP use ``?pkt_size=1316``, seven TS packets per datagram), ``rtmp://`` and
``rtmps://`` (``format: flv``). It has no SRT protocol, so an ``srt://`` URL is
refused with a node error that says so (the system ffmpeg has SRT: pipe a
``sink::y4m`` into it instead). The encoder runs with x264's ``zerolatency``
tune. UDP is fire-and-forget: a receiver that goes away costs nothing; a TCP
or RTMP peer that goes away is a write error, hence the node's error state.
"""

from __future__ import annotations

from compositord.daemon.engine.sinks.base import SinkError
from compositord.daemon.engine.sinks.encoding import EncoderSink

# Output protocols the bundled FFmpeg lacks (PyAV lists none; it fails only at the first write, with
# "Protocol not found"): refused up front so the node says why.
MISSING_PROTOCOLS = frozenset({"srt"})
# Network protocols only: FFmpeg would as gladly write ``file:``, ``pipe:`` or ``cache:`` URLs, which would
# bypass the output directory. The schema's pattern refuses them already; this holds for params that never
# passed it (rows stored by an older version).
NETWORK_SCHEMES = frozenset({"udp", "tcp", "rtmp", "rtmps", "srt"})


class StreamSink(EncoderSink):
    kind = "sink::stream"
    low_latency = True
    queue_capacity = 4  # live: a late frame is worth little, so keep the backlog short

    def where(self) -> str | None:
        # scheme://host:port only: an RTMP path or a query may hold a stream key.
        url = str(self.params["url"])
        scheme, _, rest = url.partition("://")
        return f"{scheme}://{rest.split('/', 1)[0].split('?', 1)[0]}"

    def target(self) -> tuple[str, str, dict[str, str]]:
        url = str(self.params["url"])
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
        format_name = str(self.params.get("format", "mpegts"))
        if scheme in ("rtmp", "rtmps") and format_name != "flv":
            raise SinkError("rtmp:// carries FLV: set format to flv")
        return url, format_name, {}
