"""The other services' health, asked over HTTP all at once."""

import asyncio
import time

import httpx
from pydantic import BaseModel

from services.core.settings import SERVICE_NAMES, Settings


class ServiceHealth(BaseModel):
    url: str
    status: str
    latency_ms: float | None = None
    error: str | None = None


async def _check(client: httpx.AsyncClient, url: str) -> ServiceHealth:
    started = time.perf_counter()
    try:
        response = await client.get(f"{url}/health")
    except httpx.HTTPError as exc:
        return ServiceHealth(url=url, status="down", error=f"{type(exc).__name__}: {exc}"[:200])
    latency = round((time.perf_counter() - started) * 1000, 1)
    state = "ok" if response.status_code == 200 else f"http {response.status_code}"
    return ServiceHealth(url=url, status=state, latency_ms=latency)


async def services_health(settings: Settings, *, timeout: float = 2.0) -> dict[str, ServiceHealth]:
    """`/health` of every service (admin included), concurrently, with a short timeout."""
    urls = {name: settings.service_url(name) for name in SERVICE_NAMES}
    async with httpx.AsyncClient(timeout=timeout) as client:
        results = await asyncio.gather(*(_check(client, url) for url in urls.values()))
    return dict(zip(urls, results, strict=True))
