"""Settings the daemon refuses to start with (hardening issue #14): a bearer token that is not
visible ASCII (it never matched in an Authorization header, while the same token worked in the
query string) and unreadable stream destinations; and the context the settings give validation."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from compositord.cli.run import add_arguments
from compositord.daemon.config import Settings, SettingsError
from compositord.protocol import params
from compositord.protocol.destinations import LOOPBACK_ENTRIES
from compositord.protocol.errors import RemoteProtocolError


def args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.mark.parametrize("token", ["pässwort", "tök", "two words", "tab\there", "line\nbreak", "€uro", "\x7f"])
def test_a_token_that_an_http_header_cannot_carry_is_refused(token: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_args(args(), {"COMPOSITORD_TOKEN": token})
    message = str(info.value)
    assert "COMPOSITORD_TOKEN" in message and "ASCII" in message
    assert token not in message, "the message never shows the secret"
    with pytest.raises(SettingsError):
        Settings(token=token)


@pytest.mark.parametrize("token", ["s3cret-token", "A~b!c#d$e%f&g'h(i)j*k+l,m-n.o/p:q;r<s=t>u?v@w[x]y^z_{|}", "x"])
def test_visible_ascii_tokens_are_fine(token: str) -> None:
    assert Settings.from_args(args(), {"COMPOSITORD_TOKEN": token}).token == token


def test_run_says_why_it_will_not_start(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "compositord", "run", "--state-dir", str(tmp_path), "--port", "0"],
        env={**os.environ, "COMPOSITORD_TOKEN": "pässwort"},
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 1
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("compositord run: COMPOSITORD_TOKEN: character 2 of 8"), lines
    assert not (tmp_path / "compositord.sqlite3").exists(), "nothing started"


def test_stream_destinations_from_the_environment() -> None:
    assert Settings.from_args(args(), {}).allowed_stream_destinations == LOOPBACK_ENTRIES
    settings = Settings.from_args(
        args(), {"COMPOSITORD_ALLOWED_STREAM_DESTINATIONS": "udp://239.0.0.1:5000, rtmp://live.example.com"}
    )
    context = settings.validation_context()
    assert not context.allow_stdout
    assert params.validate("sink::stream", {"url": "udp://239.0.0.1:5000"}, context=context)
    with pytest.raises(RemoteProtocolError):
        params.validate("sink::stream", {"url": "udp://127.0.0.1:5000"}, context=context)  # replaced, not added to
    with pytest.raises(SettingsError) as info:
        Settings.from_args(args(), {"COMPOSITORD_ALLOWED_STREAM_DESTINATIONS": "udp://x:70000"})
    assert "allowed_stream_destinations" in str(info.value)
