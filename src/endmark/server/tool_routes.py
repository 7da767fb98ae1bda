"""llama-server's `/tools` routes, for the chat page's agent loop: `GET /tools` lists the
tools of the MCP servers, `POST /tools` runs one (`{"tool": NAME, "params": {...}}`) and
answers `{"plain_text_response": TEXT}` or `{"error": TEXT}`. Without MCP servers both are
llama-server's 403 "this feature is disabled". The API key, when set, is required here as
on every route (`server/http/security.py`)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from endmark.mcp_tools import McpTools
from endmark.server.http.errors import ApiError

router = APIRouter()

DISABLED = {"error": {"code": 403, "message": "this feature is disabled",
                      "type": "feature_disabled"}}  # fmt: skip


def _tools(request: Request) -> McpTools | None:
    tools = getattr(request.app.state, "mcp", None)
    return tools if tools else None


@router.get("/tools", include_in_schema=False)
async def list_tools(request: Request) -> Any:
    tools = _tools(request)
    if tools is None:
        return JSONResponse(DISABLED, status_code=403)
    return tools.cards()


@router.post("/tools", include_in_schema=False)
async def run_tool(request: Request) -> Any:
    tools = _tools(request)
    if tools is None:
        return JSONResponse(DISABLED, status_code=403)
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise ApiError(400, "the request body must be JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("tool"), str):
        raise ApiError(400, 'the body needs "tool": the name of a tool from GET /tools', "tool")
    params = body.get("params") or {}
    if not isinstance(params, dict):
        raise ApiError(400, '"params" must be an object of the tool\'s arguments', "params")
    if body["tool"] not in tools.tools:
        raise ApiError(404, f"no tool named {body['tool']!r}: GET /tools lists them", "tool")
    return await tools.call(body["tool"], params)
