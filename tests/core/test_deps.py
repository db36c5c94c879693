"""The shared dependencies: settings and storage are resolved on the event loop (no worker
thread per request), a test's override of get_settings still reaches every route, and the
session commits after the endpoint or rolls back when it fails."""

import inspect
from pathlib import Path

import httpx
from fastapi import FastAPI
from sqlalchemy import text

from services.core import deps
from services.core.db import engine
from services.core.errors import InvalidInput, install_error_handlers
from services.core.settings import Settings, get_settings


def test_settings_and_storage_take_no_thread_hop():
    # FastAPI runs a plain function dependency in a worker thread; a coroutine runs inline.
    assert inspect.iscoroutinefunction(deps.current_settings)
    assert inspect.iscoroutinefunction(deps._storage)
    # The session's start runs inline too; only its end (commit, rollback) takes a thread.
    assert inspect.isasyncgenfunction(deps._session)


async def test_an_override_of_get_settings_reaches_the_routes(tmp_path: Path):
    app = FastAPI()

    @app.get("/where")
    async def where(settings: deps.SettingsDep, storage: deps.StorageDep) -> dict[str, str]:
        return {"settings": str(settings.storage_dir), "storage": str(storage.root)}

    app.dependency_overrides[get_settings] = lambda: Settings(storage_dir=tmp_path)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        answer = (await client.get("/where")).json()

    assert answer == {"settings": str(tmp_path), "storage": str(tmp_path.resolve())}


def _table_app(tmp_path: Path) -> FastAPI:
    """An app whose plain function endpoint writes a row through SessionDep, then fails if
    asked to."""
    settings = Settings(storage_dir=tmp_path)
    with engine(settings).begin() as connection:
        connection.execute(text("CREATE TABLE marks (name TEXT)"))
    app = FastAPI()

    @app.post("/mark/{name}")
    def mark(name: str, session: deps.SessionDep, fail: bool = False) -> dict[str, str]:
        session.execute(text("INSERT INTO marks VALUES (:name)"), {"name": name})
        if fail:
            raise InvalidInput("asked to fail")
        return {"marked": name}

    @app.get("/marks")
    def marks(session: deps.SessionDep) -> list[str]:
        return list(session.scalars(text("SELECT name FROM marks ORDER BY name")))

    app.dependency_overrides[get_settings] = lambda: settings
    install_error_handlers(app)
    return app


async def test_the_session_commits_after_the_endpoint_and_rolls_back_when_it_fails(tmp_path: Path):
    app = _table_app(tmp_path)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.post("/mark/kept")).status_code == 200
        failed = await client.post("/mark/dropped", params={"fail": "true"})
        assert failed.status_code == 400
        assert (await client.get("/marks")).json() == ["kept"]
