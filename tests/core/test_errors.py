"""The error catalogue's answers (services/core/errors.py)."""

import httpx
import pytest
from fastapi import FastAPI

from services.core.errors import InvalidInput, install_error_handlers


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("/srv/secret/path went wrong")

    @app.get("/refused")
    async def refused() -> None:
        raise InvalidInput("send a smaller chunk")

    return app


@pytest.mark.asyncio
async def test_an_unexpected_error_is_a_500_that_closes_the_connection_and_hides_the_cause():
    transport = httpx.ASGITransport(app=_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        answer = await client.get("/boom")
        assert answer.status_code == 500
        assert answer.json() == {
            "error": "internal",
            "detail": "internal error; see the service log",
        }
        # The server drops the connection after it: a pool must not reuse it.
        assert answer.headers["connection"] == "close"
        refused = await client.get("/refused")
        assert refused.status_code == 400
        assert "connection" not in refused.headers  # a 4xx keeps the connection
