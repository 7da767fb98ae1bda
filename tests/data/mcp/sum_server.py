"""A tiny MCP server for the tests (stdio): adds two numbers, reads a fixture, or sleeps."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("sums", log_level="WARNING")


@server.tool()
def add(a: int, b: int) -> str:
    """Add two whole numbers."""
    return str(a + b)


@server.tool()
def read_fixture() -> str:
    """The fixture file beside this server."""
    return (Path(__file__).parent / "fixture.txt").read_text(encoding="utf-8")


@server.tool()
async def nap(seconds: float) -> str:
    """Sleep, then answer: a tool that can run past its timeout."""
    await asyncio.sleep(seconds)
    return "awake"


@server.tool()
def fail() -> str:
    """Always fails."""
    raise ToolError("this tool always fails")


if __name__ == "__main__":
    server.run(sys.argv[1] if len(sys.argv) > 1 else "stdio")
