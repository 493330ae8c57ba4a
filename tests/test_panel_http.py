"""The panel's side of the daemon's port: its static files, the token rule for HTTP (every path but the
panel's files and /healthz), a browser's token as a WebSocket subprotocol, the panel's own origin admitted
by default, /metrics (parsed by the Prometheus client's own parser, its counters moving while frames
render), /healthz (503 with the reasons when a pipeline fails), and listassets."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import ConnectionRejected, open_websocket_url

from compositord.daemon.control import browser_auth
from compositord.daemon.control.server import ServerOptions, check_handshake
from compositord.daemon.engine.render_times import RENDER_MS_BOUNDS, RenderTimeHistogram
from compositord.testing.plugin import settings_for
from compositord.tests.sink_helpers import Peer

TOKEN = "s3cret/token+with=odd~chars!"  # visible ASCII (the daemon refuses any other token), with characters a subprotocol name cannot hold


async def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    def fetch() -> tuple[int, dict[str, str], bytes]:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as response:
                return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
        except urllib.error.HTTPError as error:
            return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()

    return await trio.to_thread.run_sync(fetch)


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def metrics_of(text: str) -> Samples:
    """Every sample by name and labels: ``{(name, (("label", "value"), ...)): value}``."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


# --------------------------------------------------------------------------- pure rules


def test_a_token_survives_the_subprotocol_round_trip() -> None:
    name = browser_auth.token_subprotocol(TOKEN)
    assert name.startswith(browser_auth.TOKEN_SUBPROTOCOL_PREFIX)
    assert all(c.isalnum() or c in "-_." for c in name), "a subprotocol name is an HTTP token"
    offered = browser_auth.offered_subprotocols([f"{browser_auth.SUBPROTOCOL}, {name}"])
    assert browser_auth.token_from_subprotocols(offered) == TOKEN
    assert browser_auth.token_from_subprotocols([browser_auth.TOKEN_SUBPROTOCOL_PREFIX + "%%%"]) is None
    assert browser_auth.token_from_subprotocols(["chat"]) is None


@pytest.mark.parametrize(
    ("origin", "host", "bound", "admitted"),
    [
        ("http://127.0.0.1:4545", "127.0.0.1:4545", "127.0.0.1", True),
        ("http://localhost:4545", "localhost:4545", "127.0.0.1", True),
        ("http://[::1]:4545", "[::1]:4545", "::1", True),
        ("http://127.0.0.1:4546", "127.0.0.1:4545", "127.0.0.1", False),  # another port is another site
        ("https://127.0.0.1:4545", "127.0.0.1:4545", "127.0.0.1", False),
        ("http://evil.example:4545", "evil.example:4545", "127.0.0.1", False),  # DNS rebinding onto loopback
        ("http://192.168.1.5:4545", "192.168.1.5:4545", "0.0.0.0", True),
        ("http://studio.lan:4545", "studio.lan:4545", "0.0.0.0", False),  # a name: needs --allow-origin
        ("http://192.168.1.5:4545", "192.168.1.6:4545", "0.0.0.0", False),
        ("http://192.168.1.5:4545", "192.168.1.5:4545", "192.168.1.5", True),
        ("http://192.168.1.6:4545", "192.168.1.6:4545", "192.168.1.5", False),
        ("null", "127.0.0.1:4545", "127.0.0.1", False),
    ],
)
def test_the_daemons_own_origin(origin: str, host: str, bound: str, admitted: bool) -> None:
    assert browser_auth.is_own_origin(origin, host, bound, 4545) is admitted


def test_the_handshake_takes_the_token_from_a_subprotocol_and_admits_its_own_origin() -> None:
    options = ServerOptions(token=TOKEN)
    offer = f"{browser_auth.SUBPROTOCOL}, {browser_auth.token_subprotocol(TOKEN)}".encode()
    own = [(b"sec-websocket-protocol", offer), (b"origin", b"http://127.0.0.1:4545"), (b"host", b"127.0.0.1:4545")]
    assert check_handshake("/api/v1/control", own, options, 0, bound_port=4545) is None
    refusal = check_handshake("/api/v1/control", own, options, 0)  # the port unknown: only the allowlist
    assert refusal is not None and refusal.status == 403
    wrong = [(b"sec-websocket-protocol", f"{browser_auth.SUBPROTOCOL}, {browser_auth.token_subprotocol('nope')}".encode())]
    refusal = check_handshake("/api/v1/control", wrong, options, 0, bound_port=4545)
    assert refusal is not None and refusal.status == 401
    header_wins = [(b"authorization", b"Bearer nope"), (b"sec-websocket-protocol", offer)]
    refusal = check_handshake("/api/v1/control", header_wins, options, 0, bound_port=4545)
    assert refusal is not None and refusal.status == 401


def test_render_time_buckets_count_each_sample_once() -> None:
    import numpy as np

    histogram = RenderTimeHistogram()
    histogram.observe(np.array([0.5, 1.0, 1.0001, 33.3, 2000.0]))
    histogram.observe(np.array([]))
    stats = histogram.as_stats()
    assert stats["le_ms"] == list(RENDER_MS_BOUNDS) and sum(stats["counts"]) == 5
    assert stats["counts"][0] == 2, "a value equal to a bound counts in its bucket"
    assert stats["counts"][1] == 1 and stats["counts"][-1] == 1
    assert stats["sum_ms"] == pytest.approx(2035.8001, abs=1e-3)


# --------------------------------------------------------------------------- through the daemon


@pytest.fixture
def compositord_settings(tmp_path: Path, compositord_pipeline: dict[str, Any]) -> Any:
    assets = tmp_path / "state" / "assets"
    (assets / "sub").mkdir(parents=True)
    (assets / "a.png").write_bytes(b"png")
    (assets / "sub" / "b.JPG").write_bytes(b"jpg")
    (assets / "notes.txt").write_text("not an image")
    (assets / "outside.png").symlink_to("/etc/hostname")
    return settings_for(tmp_path / "state", compositord_pipeline, token=TOKEN)


def base_url(daemon: Any) -> str:
    return f"http://{daemon.settings.host}:{daemon.port}"


async def test_the_panel_is_public_and_everything_else_needs_the_token(compositord_daemon: Any) -> None:
    base = base_url(compositord_daemon)
    status, headers, body = await http_get(base + "/")
    assert status == 200 and headers["content-type"].startswith("text/html") and b'<script type="module" src="/app.js">' in body
    assert "script-src 'self'" in headers["content-security-policy"]
    for path, content_type in [
        ("/app.js", "text/javascript"),
        ("/causal.js", "text/javascript"),
        ("/style.css", "text/css"),
        ("/favicon.ico", "image/x-icon"),
    ]:
        status, headers, _ = await http_get(base + path)
        assert (status, headers["content-type"].split(";")[0]) == (200, content_type), path
    assert (await http_get(base + "/healthz"))[0] == 200
    for path in ("/metrics", "/api/v1/auth", "/nothing-here"):
        status, headers, _ = await http_get(base + path)
        assert status == 401 and headers["www-authenticate"].startswith("Bearer"), path
        assert (await http_get(base + path, {"Authorization": "Bearer wrong"}))[0] == 401, path
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert (await http_get(base + "/api/v1/auth", bearer))[0] == 200
    assert (await http_get(base + "/metrics", bearer))[0] == 200
    assert (await http_get(base + "/nothing-here", bearer))[0] == 404


async def test_a_browser_presents_the_token_as_a_subprotocol_from_its_own_origin(compositord_daemon: Any) -> None:
    url, port = compositord_daemon.url, compositord_daemon.port
    protocols = [browser_auth.SUBPROTOCOL, browser_auth.token_subprotocol(TOKEN)]
    own_origin = [(b"Origin", f"http://127.0.0.1:{port}".encode())]
    async with open_websocket_url(url, subprotocols=protocols, extra_headers=own_origin) as ws:
        assert ws.subprotocol == browser_auth.SUBPROTOCOL
        answer = await Peer(ws).request("listsessions")
        assert answer["action"] == "sessionslisted"
    with pytest.raises(ConnectionRejected) as refused:
        async with open_websocket_url(url, subprotocols=[browser_auth.SUBPROTOCOL, browser_auth.token_subprotocol("wrong")]):
            pass
    assert refused.value.status_code == 401
    with pytest.raises(ConnectionRejected) as refused:
        async with open_websocket_url(
            url, subprotocols=protocols, extra_headers=[(b"Origin", f"http://evil.example:{port}".encode())]
        ):
            pass
    assert refused.value.status_code == 403


async def test_listassets_offers_the_images_of_the_asset_folder(compositord_daemon: Any) -> None:
    protocols = [browser_auth.SUBPROTOCOL, browser_auth.token_subprotocol(TOKEN)]
    async with open_websocket_url(compositord_daemon.url, subprotocols=protocols) as ws:
        answer = await Peer(ws).request("listassets")
    assert answer == {"action": "assetslisted", "assets": ["a.png", "sub/b.JPG"], "truncated": False}


@pytest.mark.gl
async def test_metrics_parse_and_move_while_frames_render(compositord_daemon: Any) -> None:
    base, session = base_url(compositord_daemon), compositord_daemon.session_id
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    protocols = [browser_auth.SUBPROTOCOL, browser_auth.token_subprotocol(TOKEN)]
    async with open_websocket_url(compositord_daemon.url, subprotocols=protocols) as ws:
        peer = Peer(ws)
        status, headers, body = await http_get(base + "/metrics", bearer)
        assert status == 200 and headers["content-type"].startswith("text/plain")
        first = metrics_of(body.decode())
        for rev in range(1, 4):
            message = {"PatchParams": {"layers": {"in_0": {"opacity": 0.5 + rev / 10}}, "_sender": "metrics-test", "_rev": rev}}
            assert (await peer.request("tunenode", session_id=session, node_id="comp", message=message))["action"] == "success"
        await trio.sleep(1.3)  # a stats interval: the render histogram comes with the node stats
        second = metrics_of((await http_get(base + "/metrics", bearer))[2].decode())
        assert second[("compositord_connections", ())] >= 1
    label = (("session", session),)
    assert second[("compositord_frames_rendered_total", label)] > first[("compositord_frames_rendered_total", label)]
    assert second[("compositord_tunes_total", label)] - first.get(("compositord_tunes_total", label), 0) == 3
    assert second[("compositord_session_fps", label)] == 30
    assert second[("compositord_engine_restarts_total", label)] == 0
    assert second[("compositord_store_commit_seconds_count", ())] > first[("compositord_store_commit_seconds_count", ())]
    render_labels = (("node", "comp"), ("session", session))
    count = second[("compositord_render_seconds_count", render_labels)]
    assert count > 10 and second[("compositord_render_seconds_bucket", (("le", "+Inf"), *render_labels))] == count
    assert second[("compositord_render_seconds_sum", render_labels)] > 0


@pytest.mark.gl
async def test_healthz_turns_503_with_the_reason_when_a_pipeline_fails(compositord_daemon: Any) -> None:
    base, session = base_url(compositord_daemon), compositord_daemon.session_id
    status, _, body = await http_get(base + "/healthz")
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    protocols = [browser_auth.SUBPROTOCOL, browser_auth.token_subprotocol(TOKEN)]
    async with open_websocket_url(compositord_daemon.url, subprotocols=protocols) as ws:
        peer = Peer(ws)
        added = await peer.request(
            "addnode", session_id=session, node_id="clip", kind="video::file", params={"path": "missing.mp4"}
        )
        assert added["action"] == "success", added
        with trio.fail_after(10):
            while (answer := await http_get(base + "/healthz"))[0] == 200:
                await trio.sleep(0.05)
        status, headers, body = answer
        document = json.loads(body)
        assert status == 503 and headers["content-type"] == "application/json"
        assert document["status"] == "unhealthy"
        [problem] = document["problems"]
        assert (problem["session_id"], problem["problem"], problem["node_id"]) == (session, "node_error", "clip")
        assert "missing.mp4" in problem["message"]
        assert (await peer.request("removenode", session_id=session, node_id="clip"))["action"] == "success"
        with trio.fail_after(10):
            while (await http_get(base + "/healthz"))[0] != 200:
                await trio.sleep(0.05)
