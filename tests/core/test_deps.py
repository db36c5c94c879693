"""The shared dependencies: settings and storage are resolved on the event loop (no worker
thread per request), and a test's override of get_settings still reaches every route."""

import inspect
from pathlib import Path

import httpx
from fastapi import FastAPI

from services.core import deps
from services.core.settings import Settings, get_settings


def test_settings_and_storage_take_no_thread_hop():
    # FastAPI runs a plain function dependency in a worker thread; a coroutine runs inline.
    assert inspect.iscoroutinefunction(deps.current_settings)
    assert inspect.iscoroutinefunction(deps._storage)


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
