"""Auth through the real daemon (PROTOCOL.md section 1): bearer token (header or ``token`` query
parameter) checked before any message, the Origin allowlist, and loopback as the default bind.

tests/test_server_handshake.py checks the same rules on the bare ControlServer and check_handshake;
these tests go through Settings, as `compositord run` configures them.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionRejected, open_websocket_url

from compositord.cli.run import add_arguments
from compositord.client import ConnectFailed, open_client
from compositord.daemon.config import Settings
from compositord.testing.plugin import settings_for

TOKEN = "s3cret-token"
ORIGIN = "https://studio.example"


@pytest.fixture
def compositord_settings(tmp_path: Path, compositord_pipeline: dict[str, Any]) -> Settings:
    return settings_for(tmp_path / "state", compositord_pipeline, token=TOKEN, allowed_origins=frozenset({ORIGIN}))


async def _status(url: str, headers: list[tuple[bytes, bytes]] | None = None) -> int:
    with pytest.raises(ConnectionRejected) as info:
        async with open_websocket_url(url, extra_headers=headers or [], connect_timeout=5):
            pass
    return info.value.status_code


@pytest.mark.parametrize(
    ("suffix", "headers"),
    [
        ("", []),
        ("", [(b"Authorization", b"Bearer wrong")]),
        ("", [(b"Authorization", b"Basic " + TOKEN.encode())]),
        ("", [(b"Authorization", b"Bearer")]),
        ("?token=wrong", []),
        ("?token=", []),
        ("?token=" + TOKEN[:-1], []),
        ("?token=" + TOKEN, [(b"Authorization", b"Bearer wrong")]),  # the header, when present, decides
    ],
    ids=[
        "none",
        "wrong-header",
        "basic-scheme",
        "empty-bearer",
        "wrong-query",
        "empty-query",
        "prefix-query",
        "wrong-header-right-query",
    ],
)
async def test_no_or_wrong_token_is_401_before_any_message(
    compositord_daemon: Any, suffix: str, headers: list[tuple[bytes, bytes]]
) -> None:
    assert await _status(compositord_daemon.url + suffix, headers) == 401


async def test_the_right_token_in_the_header_or_the_query_is_served(compositord_daemon: Any) -> None:
    async with open_client(compositord_daemon.url, token=TOKEN) as client:
        assert [s["session_id"] for s in await client.list_sessions()] == [compositord_daemon.session_id]
    async with open_websocket_url(compositord_daemon.url + "?token=" + TOKEN, connect_timeout=5):
        pass


async def test_the_client_library_stops_on_401(compositord_daemon: Any) -> None:
    with pytest.raises(ConnectFailed) as info:
        with trio.fail_after(10):
            async with open_client(compositord_daemon.url, token="wrong"):
                pass
    assert info.value.status == 401


async def test_origin_allowlist(compositord_daemon: Any) -> None:
    auth = (b"Authorization", b"Bearer " + TOKEN.encode())
    assert await _status(compositord_daemon.url, [auth, (b"Origin", b"https://evil.example")]) == 403
    assert await _status(compositord_daemon.url, [auth, (b"Origin", b"null")]) == 403
    assert await _status(compositord_daemon.url, [auth, (b"Origin", ORIGIN.encode() + b".evil.example")]) == 403
    async with open_websocket_url(compositord_daemon.url, extra_headers=[auth, (b"Origin", ORIGIN.encode())], connect_timeout=5):
        pass
    async with open_websocket_url(compositord_daemon.url, extra_headers=[auth], connect_timeout=5):
        pass  # no Origin: not a browser, allowed


async def test_token_is_checked_before_origin(compositord_daemon: Any) -> None:
    # A browser from a foreign origin without the token learns nothing about the allowlist.
    assert await _status(compositord_daemon.url, [(b"Origin", b"https://evil.example")]) == 401


def test_loopback_is_the_default_bind(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--state-dir", str(tmp_path)])
    settings = Settings.from_args(args, {})
    assert settings.host == "127.0.0.1"
    assert settings.server_options().host == "127.0.0.1"
    assert Settings().host == "127.0.0.1"
    assert settings.token is None and settings.allowed_origins == frozenset()
    from_env = Settings.from_args(args, {"COMPOSITORD_TOKEN": "t", "COMPOSITORD_ALLOWED_ORIGINS": ORIGIN})
    assert from_env.token == "t" and ORIGIN in from_env.allowed_origins
