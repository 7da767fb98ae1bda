"""`GET /tools` and `POST /tools` (llama-server's routes), on the scripted app with an MCP
stand-in: the routes' shapes, errors, the API key, and CORS's default with MCP servers."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from endmark.mcp_tools import McpServerConfig, McpTool, McpTools
from endmark.server.http.cors import CorsPolicy
from endmark.settings import Settings
from tests.scripted_app import scripted_app

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


class StandIn(McpTools):
    """One tool, `sums_add`, answered in-process."""

    def __init__(self) -> None:
        super().__init__([McpServerConfig("sums", "unused")])
        self.tools = {"sums_add": McpTool("sums", "add", "Add one.", SCHEMA)}

    async def call(self, exposed: str, arguments: dict[str, Any]) -> dict[str, str]:
        return {"plain_text_response": str(arguments["a"] + 1)}


def requests(settings: Settings | None, mcp: McpTools | None, *calls: tuple) -> list:  # type: ignore[type-arg]
    with scripted_app(settings) as app:
        if mcp is not None:
            app.app.state.mcp = mcp

        async def send() -> list[httpx.Response]:
            async with app.client() as c:
                return [await c.request(method, path, **kw) for method, path, kw in calls]

        return asyncio.run(send())


def test_without_mcp_servers_the_routes_are_disabled_as_in_llama_server() -> None:
    got, posted = requests(None, None, ("GET", "/tools", {}), ("POST", "/tools", {"json": {}}))
    assert got.status_code == posted.status_code == 403
    assert got.json()["error"]["type"] == "feature_disabled"


def test_listing_running_and_refusing() -> None:
    listed, ran, unknown, no_name, bad_params, not_json = requests(
        None,
        StandIn(),
        ("GET", "/tools", {}),
        ("POST", "/tools", {"json": {"tool": "sums_add", "params": {"a": 41}}}),
        ("POST", "/tools", {"json": {"tool": "nope", "params": {}}}),
        ("POST", "/tools", {"json": {"params": {}}}),
        ("POST", "/tools", {"json": {"tool": "sums_add", "params": [1]}}),
        ("POST", "/tools", {"content": b"{"}),
    )
    assert listed.status_code == 200
    [card] = listed.json()
    assert card["tool"] == "sums_add" and card["type"] == "mcp"
    assert card["definition"]["function"]["parameters"] == SCHEMA
    assert ran.status_code == 200 and ran.json() == {"plain_text_response": "42"}
    assert unknown.status_code == 404 and "GET /tools" in unknown.json()["error"]["message"]
    assert [r.status_code for r in (no_name, bad_params, not_json)] == [400, 400, 400]


def test_the_tool_routes_want_the_api_key_when_one_is_set() -> None:
    body = {"json": {"tool": "sums_add", "params": {"a": 1}}}
    keyed = {"headers": {"Authorization": "Bearer k"}}
    without, with_key, run_without = requests(
        Settings(api_key="k"),
        StandIn(),
        ("GET", "/tools", {}),
        ("GET", "/tools", keyed),
        ("POST", "/tools", body),
    )
    assert without.status_code == run_without.status_code == 401
    assert with_key.status_code == 200


def test_with_mcp_servers_cors_defaults_to_localhost() -> None:
    assert CorsPolicy.of(Settings()).origins == "*"
    assert CorsPolicy.of(Settings(mcp_servers_json="{}")).origins == "localhost"
    assert CorsPolicy.of(Settings(mcp_servers_json="{}", cors="*")).origins == "*"
