"""How a browser proves the bearer token and which browser origins are admitted (PROTOCOL.md section 1).

A page's JavaScript cannot set headers on a WebSocket handshake, and a token
in the URL ends up in logs and history. So a browser offers two subprotocols
in ``Sec-WebSocket-Protocol``: :data:`SUBPROTOCOL` (``compositord.v1``), which
the server selects in its answer, and ``compositord.token.`` followed by the
token in unpadded base64url (the characters a subprotocol name may hold). The
token protocol is never selected, so it is never echoed back.

The panel is served by the daemon itself, so its origin is the daemon's own,
and it is admitted without ``--allow-origin``: the origin ``http://HOST:PORT``
for the address the daemon is bound to (with loopback, also ``localhost``,
``127.0.0.1`` and ``[::1]``). Bound to a wildcard address, the origin is the
daemon's own when it equals the request's ``Host`` and that host is an IP
address: a name could have been rebound to this machine by another site (DNS
rebinding), so a named host needs ``--allow-origin``.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from urllib.parse import urlsplit

SUBPROTOCOL = "compositord.v1"
TOKEN_SUBPROTOCOL_PREFIX = "compositord.token."

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_HOSTS = ("", "0.0.0.0", "::")


def offered_subprotocols(header_values: list[str]) -> list[str]:
    """The subprotocols of every ``Sec-WebSocket-Protocol`` header, in order."""
    return [item.strip() for value in header_values for item in value.split(",") if item.strip()]


def token_from_subprotocols(offered: list[str]) -> str | None:
    """The token a browser offered as a subprotocol; None when it offered none (or one that is not base64url)."""
    for name in offered:
        if name.startswith(TOKEN_SUBPROTOCOL_PREFIX):
            encoded = name[len(TOKEN_SUBPROTOCOL_PREFIX) :]
            try:
                padded = encoded + "=" * (-len(encoded) % 4)
                return base64.b64decode(padded, altchars=b"-_", validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                return None
    return None


def token_subprotocol(token: str) -> str:
    """What a client offers to present ``token`` (the inverse of :func:`token_from_subprotocols`)."""
    return TOKEN_SUBPROTOCOL_PREFIX + base64.urlsafe_b64encode(token.encode("utf-8")).decode("ascii").rstrip("=")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _is_loopback(host: str) -> bool:
    return host == "localhost" or (_is_ip(host) and ipaddress.ip_address(host).is_loopback)


def is_own_origin(origin: str, host_header: str | None, bound_host: str, bound_port: int) -> bool:
    """Whether ``origin`` is the daemon's own (the panel's), as the module docstring says."""
    try:
        parts = urlsplit(origin)
        origin_host, origin_port = parts.hostname, parts.port
    except ValueError:
        return False
    if parts.scheme != "http" or origin_host is None or origin_port != bound_port or parts.path not in ("", "/"):
        return False
    if _is_loopback(bound_host):
        return _is_loopback(origin_host)
    if bound_host in WILDCARD_HOSTS:
        if host_header is None:
            return False
        try:
            host = urlsplit(f"//{host_header}")
            same = host.hostname == origin_host and host.port == origin_port
        except ValueError:
            return False
        return same and (_is_ip(origin_host) or _is_loopback(origin_host))
    return origin_host == bound_host.lower() or (
        _is_ip(bound_host) and _is_ip(origin_host) and ipaddress.ip_address(origin_host) == ipaddress.ip_address(bound_host)
    )
