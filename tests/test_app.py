from __future__ import annotations

import asyncio

import httpx

from endmark.server.app import create_app
from endmark.settings import Settings


def test_health_is_503_and_routes_refuse_while_the_model_loads() -> None:
    app = create_app(Settings())  # lifespan not run: the model never starts loading

    async def go() -> tuple[httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return await c.get("/health"), await c.post("/completion", json={"prompt": "x"})

    health, completion = asyncio.run(go())
    assert health.status_code == 503 and "Loading model" in health.json()["error"]["message"]
    assert completion.status_code == 503 and health.json()["error"]["code"] == 503
