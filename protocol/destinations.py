"""Where ``sink::stream`` may send, and where ``av::stream_in`` may pull from or listen on: the operator's
allowlists of network destinations.

A stream sink opens a connection (or sends datagrams) to the host and port of
its URL. Without a limit, anyone with control access could make the daemon
reach any host its network can (a port scanner, a spam relay, a way into a
private network). So the daemon sends only to destinations the operator
listed (``allowed_stream_destinations``, docs/OPERATIONS.md), and by default
only to the loopback interface. The same holds for what a network input
reaches: it pulls only from sources the operator listed
(``allowed_ingest_sources``) and listens only where it is allowed to
(``allowed_ingest_listen``), both loopback by default.

The check is pure: the URL is parsed, never resolved. A host name matches
only a listed name, character for character (case aside); an IP literal
matches a listed address or network. A host written any other way (a decimal
``2130706433``, a trailing dot, user info before ``@``) matches nothing and is
refused: FFmpeg's URL parser and this one must never disagree about where a
stream goes, so only the plain form is accepted.

An allowlist entry is ``SCHEME://HOST[:PORT]``:

- ``SCHEME``: ``udp``, ``tcp``, ``rtmp``, ``rtmps``, ``srt``, and for inputs
  ``rtsp``, ``rtsps``, ``http``, ``https``, or ``*`` (any);
- ``HOST``: a host name (``live.example.com``), an IPv4 address, an IPv6
  address in brackets, or a network in CIDR form (``10.0.0.0/8``,
  ``[fd00::]/8``);
- ``PORT``: one port (``1935``), a range (``5000-5099``) or ``*``; absent
  means any port.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

STREAM_SCHEMES = ("udp", "tcp", "rtmp", "rtmps", "srt")
PULL_SCHEMES = ("rtsp", "rtsps", "http", "https")  # inputs only: FFmpeg sends no stream there
KNOWN_SCHEMES = (*STREAM_SCHEMES, *PULL_SCHEMES)
# Ports FFmpeg uses when the URL names none (udp, tcp and srt need one).
DEFAULT_PORTS = {"rtmp": 1935, "rtmps": 443, "rtsp": 554, "rtsps": 322, "http": 80, "https": 443}

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_HOST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
# The part of a stream URL between "//" and the first "/", "?" or "#": host and port, nothing else.
_AUTHORITY = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^\[\]:/?#@]+)(?::(?P<port>[0-9]{1,5}))?")
_ENTRY = re.compile(
    r"(?P<scheme>[a-z]+|\*)://(?P<host>\[[0-9A-Fa-f:.]+\](?:/[0-9]{1,3})?|[^\[\]:/]+(?:/[0-9]{1,2})?)(?::(?P<port>\*|[0-9]{1,5}(?:-[0-9]{1,5})?))?"
)


class DestinationError(ValueError):
    """An allowlist entry that cannot be understood (an operator's setting, not a client's request)."""


@dataclass(frozen=True)
class Destination:
    """Where a stream URL sends: scheme, host as written (lower case; IPv6 without brackets) and port."""

    scheme: str
    host: str
    port: int

    def address(self) -> IPNetwork | None:
        """The host as a one-address network when it is an IP literal, else None (a name)."""
        try:
            return ipaddress.ip_network(self.host)
        except ValueError:
            return None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_stream_url(url: str, schemes: tuple[str, ...] = STREAM_SCHEMES) -> Destination:
    """The destination of a stream URL, or ValueError saying what is wrong with it (no I/O)."""
    scheme, separator, rest = url.partition("://")
    scheme = scheme.lower()
    if not separator or scheme not in schemes:
        raise ValueError(f"must start with one of {', '.join(s + '://' for s in schemes)}")
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    match = _AUTHORITY.fullmatch(authority)
    if match is None:
        raise ValueError("must name a host and port as HOST:PORT (no user info, no spaces)")
    host = match.group("host")
    if host.startswith("["):
        host = host[1:-1]
        try:
            host = str(ipaddress.IPv6Address(host))
        except ValueError:
            raise ValueError(f"[{host}] is not an IPv6 address") from None
    elif _HOST_NAME.fullmatch(host) is None:
        raise ValueError(f"host {host[:64]!r} is not a host name or IP address")
    else:
        host = host.lower()
    port_text = match.group("port")
    if port_text is None:
        if scheme not in DEFAULT_PORTS:
            raise ValueError(f"{scheme}:// needs a port (HOST:PORT)")
        port = DEFAULT_PORTS[scheme]
    else:
        port = int(port_text)
        if not 1 <= port <= 65535:
            raise ValueError(f"port {port} is not in 1..65535")
    return Destination(scheme, host, port)


@dataclass(frozen=True)
class AllowedDestination:
    """One allowlist entry: a scheme (or any), a host name or an IP network, a port range."""

    scheme: str | None  # None: any scheme
    name: str | None  # a host name, lower case; None when ``network`` is set
    network: IPNetwork | None
    ports: tuple[int, int]  # inclusive

    @classmethod
    def parse(cls, text: str) -> AllowedDestination:
        match = _ENTRY.fullmatch(text.strip())
        if match is None:
            raise DestinationError(f"{text!r}: expected SCHEME://HOST[:PORT], e.g. udp://239.0.0.1:5000 or *://10.0.0.0/8:*")
        scheme = match.group("scheme")
        if scheme != "*" and scheme not in KNOWN_SCHEMES:
            raise DestinationError(f"{text!r}: scheme {scheme!r} is not one of {', '.join(KNOWN_SCHEMES)} or *")
        host = match.group("host")
        name: str | None = None
        network: IPNetwork | None = None
        try:
            network = ipaddress.ip_network(host.replace("[", "").replace("]", ""), strict=True)
        except ValueError as exc:
            if "/" in host or host.startswith("["):
                raise DestinationError(f"{text!r}: {exc}") from None
            if _HOST_NAME.fullmatch(host) is None:
                raise DestinationError(f"{text!r}: {host!r} is not a host name, an IP address or a network") from None
            name = host.lower()
        ports = (1, 65535)
        port_text = match.group("port")
        if port_text is not None and port_text != "*":
            low, _, high = port_text.partition("-")
            ports = (int(low), int(high or low))
            if not 1 <= ports[0] <= ports[1] <= 65535:
                raise DestinationError(f"{text!r}: ports must be in 1..65535, low to high")
        return cls(None if scheme == "*" else scheme, name, network, ports)

    def allows(self, destination: Destination) -> bool:
        if self.scheme is not None and self.scheme != destination.scheme:
            return False
        if not self.ports[0] <= destination.port <= self.ports[1]:
            return False
        if self.name is not None:
            return destination.host == self.name
        address = destination.address()
        assert self.network is not None
        return address is not None and address.version == self.network.version and address.subnet_of(self.network)  # type: ignore[arg-type]


@dataclass(frozen=True)
class StreamDestinations:
    """The allowlist: a destination is allowed when an entry allows it; ``allow_any`` allows all."""

    entries: tuple[AllowedDestination, ...] = ()
    allow_any: bool = False

    @classmethod
    def parse(cls, texts: Iterable[str]) -> StreamDestinations:
        """Entries as the operator wrote them (DestinationError for the first that cannot be read)."""
        return cls(tuple(AllowedDestination.parse(text) for text in texts if text.strip()))

    def refusal(
        self,
        url: str,
        *,
        role: str = "stream destination",
        setting: str = "allowed_stream_destinations",
        schemes: tuple[str, ...] = STREAM_SCHEMES,
    ) -> str | None:
        """None when ``url`` may be sent to (or, for an input, pulled from or bound); else why not (names no
        more than the URL's host and port, and the operator's ``setting`` that would allow it)."""
        try:
            destination = parse_stream_url(url, schemes)
        except ValueError as exc:
            return str(exc)
        if self.allow_any or any(entry.allows(destination) for entry in self.entries):
            return None
        return f"{destination} is not an allowed {role} (the operator's {setting})"


LOOPBACK_ENTRIES = ("*://127.0.0.0/8", "*://[::1]", "*://localhost")
LOOPBACK_ONLY = StreamDestinations.parse(LOOPBACK_ENTRIES)
"""The default: streams go to this machine only (a local relay, a receiver under test)."""
ANY_DESTINATION = StreamDestinations(allow_any=True)
"""For one-shot use by a local user, who could open any connection anyway."""
