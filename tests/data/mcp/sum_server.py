"""A tiny MCP server for the tests (stdio): adds two numbers, reads a fixture, sleeps, or
fails. `SUMS_TOOLS=add,nap` offers only those tools (a shorter prompt for a browser test)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("sums", log_level="WARNING")


def add(a: int, b: int) -> str:
    """Add two whole numbers."""
    return str(a + b)


def read_fixture() -> str:
    """The fixture file beside this server."""
    return (Path(__file__).parent / "fixture.txt").read_text(encoding="utf-8")


async def nap(seconds: float) -> str:
    """Sleep, then answer: a tool that can run past its timeout."""
    await asyncio.sleep(seconds)
    return "awake"


def fail() -> str:
    """Always fails."""
    raise ToolError("this tool always fails")


WANTED = os.environ.get("SUMS_TOOLS", "").split(",")
for tool in (add, read_fixture, nap, fail):
    if WANTED == [""] or tool.__name__ in WANTED:
        server.tool()(tool)

if __name__ == "__main__":
    server.run(sys.argv[1] if len(sys.argv) > 1 else "stdio")
