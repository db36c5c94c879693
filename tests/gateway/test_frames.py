"""FrameGuard: answers may not be framed, unless they name who may frame them."""

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from gateway.frames import DENY_FRAMING, FrameGuard, frame_policy


async def page(request: Request) -> Response:
    return HTMLResponse("<p>page</p>")


async def embed(request: Request) -> Response:
    return HTMLResponse("<p>embed</p>", headers={"content-security-policy": frame_policy("*")})


async def other_policy(request: Request) -> Response:
    return HTMLResponse("<p>x</p>", headers={"content-security-policy": "img-src 'self'"})


def client() -> httpx.AsyncClient:
    app = Starlette(
        routes=[Route("/", page), Route("/embed", embed), Route("/policy", other_policy)]
    )
    transport = httpx.ASGITransport(app=FrameGuard(app))
    return httpx.AsyncClient(transport=transport, base_url="http://gateway")


async def test_an_answer_says_it_may_not_be_framed() -> None:
    async with client() as http:
        response = await http.get("/")
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["content-security-policy"] == DENY_FRAMING


async def test_a_missing_route_may_not_be_framed_either() -> None:
    async with client() as http:
        response = await http.get("/nowhere")
    assert response.status_code == 404
    assert response.headers["x-frame-options"] == "DENY"


async def test_an_answer_that_names_its_framers_keeps_its_policy() -> None:
    async with client() as http:
        response = await http.get("/embed")
    assert "x-frame-options" not in response.headers
    assert response.headers.get_list("content-security-policy") == ["frame-ancestors *"]


async def test_a_policy_without_frame_ancestors_gets_the_denial_beside_it() -> None:
    async with client() as http:
        response = await http.get("/policy")
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers.get_list("content-security-policy") == ["img-src 'self'", DENY_FRAMING]
