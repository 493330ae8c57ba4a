"""The plain-HTTP routing table (daemon/control/router.py): pure, no sockets."""

from __future__ import annotations

import pytest

from compositord.daemon.control.http import HttpRequest, HttpResponse
from compositord.daemon.control.router import Router


async def _hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse.text(200, f"hello {request.method} {request.path}")


async def _created(request: HttpRequest) -> HttpResponse:
    return HttpResponse(201, b"{}", content_type="application/json")


def _request(method: str, target: str) -> HttpRequest:
    return HttpRequest(method, target, ((b"host", b"localhost"),))


ROUTER = Router({("GET", "/healthz"): _hello, ("POST", "/things"): _created, ("GET", "/things"): _hello})


@pytest.mark.parametrize(
    ("method", "target", "status", "body"),
    [
        ("GET", "/healthz", 200, b"hello GET /healthz\n"),
        ("GET", "/healthz?verbose=1", 200, b"hello GET /healthz\n"),  # the query is not part of the path
        ("HEAD", "/healthz", 200, b"hello HEAD /healthz\n"),  # answered by GET's handler; h11 leaves the body out
        ("POST", "/things", 201, b"{}"),
        ("GET", "/nothing", 404, b"nothing at /nothing\n"),
        ("GET", "/healthz/", 404, b"nothing at /healthz/\n"),  # exact paths
    ],
)
async def test_each_request_reaches_its_handler_or_a_404(method: str, target: str, status: int, body: bytes) -> None:
    response = await ROUTER.answer(_request(method, target))
    assert (response.status, response.body) == (status, body)


async def test_a_known_path_with_another_method_is_405_naming_the_allowed_ones() -> None:
    response = await ROUTER.answer(_request("DELETE", "/things"))
    assert response.status == 405 and dict(response.headers)["allow"] == "GET, HEAD, POST"
    only_post = Router({("POST", "/x"): _created})
    response = await only_post.answer(_request("HEAD", "/x"))
    assert response.status == 405 and dict(response.headers)["allow"] == "POST"


@pytest.mark.parametrize("route", [("get", "/x"), ("GET", "x")])
def test_a_malformed_route_is_refused_when_the_table_is_made(route: tuple[str, str]) -> None:
    with pytest.raises(ValueError, match="route"):
        Router({route: _hello})


def test_request_headers_by_name_and_by_token() -> None:
    request = HttpRequest(
        "GET", "/", ((b"connection", b"keep-alive, Upgrade"), (b"upgrade", b"WebSocket"), (b"connection", b"x"))
    )
    assert request.header("Connection") == "keep-alive, Upgrade"
    assert request.header_tokens("connection") == {"keep-alive", "upgrade", "x"}
    assert request.header_tokens("upgrade") == {"websocket"}
    assert request.header("origin") is None and request.header_tokens("origin") == set()
