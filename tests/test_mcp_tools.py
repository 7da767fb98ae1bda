"""MCP tools: the config format, and a real stdio server (tests/data/mcp/sum_server.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path

import pytest

from endmark.mcp_tools import (
    McpConfigError,
    McpServerConfig,
    McpTool,
    McpTools,
    parse_mcp_servers,
    read_mcp_servers,
)

SUM_SERVER = Path(__file__).parent / "data" / "mcp" / "sum_server.py"


def sums(name: str = "sums", timeout_ms: int = 30_000) -> McpServerConfig:
    return McpServerConfig(name, sys.executable, (str(SUM_SERVER),), timeout_ms=timeout_ms)


def test_cursor_format_with_every_key_and_an_entry_without_command() -> None:
    text = json.dumps({"mcpServers": {
        "fs": {"command": "srv", "args": ["-v"], "env": {"A": "1"}, "cwd": "/tmp",
               "timeout_ms": 500},
        "broken": {"args": []},
    }})  # fmt: skip
    assert parse_mcp_servers(text) == [
        McpServerConfig("fs", "srv", ("-v",), {"A": "1"}, "/tmp", 500)
    ]


@pytest.mark.parametrize(
    "text",
    ["{", "[]", '{"mcpServers": []}', '{"mcpServers": {"a": {"command": "x", "args": "y"}}}'],
)
def test_a_malformed_config_is_refused(text: str) -> None:
    with pytest.raises(McpConfigError):
        parse_mcp_servers(text)


def test_the_file_and_the_inline_json_merge_and_a_repeated_name_is_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    f = tmp_path / "mcp.json"
    f.write_text('{"mcpServers": {"a": {"command": "one"}}}')
    inline = '{"mcpServers": {"a": {"command": "two"}, "b": {"command": "three"}}}'
    with caplog.at_level(logging.WARNING, "endmark.mcp"):
        configs = read_mcp_servers(str(f), inline)
    assert [(c.name, c.command) for c in configs] == [("a", "one"), ("b", "three")]
    assert "duplicate server name 'a'" in caplog.text
    with pytest.raises(McpConfigError):
        read_mcp_servers(str(tmp_path / "missing.json"), None)


def test_a_colliding_tool_name_is_skipped_with_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tools = McpTools([sums("a"), sums("a_b")])

    async def fake_list(config: McpServerConfig) -> list[McpTool]:
        name = "b_c" if config.name == "a" else "c"
        return [McpTool(config.name, name, "", {"type": "object"})]

    tools._list = fake_list  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, "endmark.mcp"):
        asyncio.run(tools.discover())
    assert [t.server for t in tools.tools.values()] == ["a"]
    assert "'a_b_c' from server 'a_b' collides" in caplog.text


def test_tools_are_listed_called_failed_timed_out_and_respawned() -> None:
    """One server process at a time, as few spawns as the cases allow (each costs ~1 s)."""
    missing = McpServerConfig("gone", str(SUM_SERVER.parent / "no-such-server"))

    async def scenario() -> list[object]:
        tools = McpTools([sums(timeout_ms=2000), missing])
        await tools.discover()
        try:
            cards = tools.cards()
            added = await tools.call("sums_add", {"a": 2, "b": 40})
            fixture = await tools.call("sums_read_fixture", {})
            failed = await tools.call("sums_fail", {})
            napped = await tools.call("sums_nap", {"seconds": 10})
            again = await tools.call("sums_add", {"a": 1, "b": 1})  # a fresh process
            return [cards, added, fixture, failed, napped, again]
        finally:
            await tools.aclose()

    cards, added, fixture, failed, napped, again = asyncio.run(scenario())
    assert [c["tool"] for c in cards] == [  # type: ignore[union-attr,index]
        "sums_add", "sums_read_fixture", "sums_nap", "sums_fail"
    ]  # fmt: skip
    card = cards[0]  # type: ignore[index]
    assert card["type"] == "mcp" and card["display_name"] == "sums_add"
    function = card["definition"]["function"]
    assert function["name"] == "sums_add" and function["description"] == "Add two whole numbers."
    assert function["parameters"]["required"] == ["a", "b"]
    assert added == {"plain_text_response": "42"}
    assert fixture == {"plain_text_response": "The lighthouse keeper's cat is called Biscuit.\n"}
    assert "this tool always fails" in failed["error"]  # type: ignore[index]
    assert napped == {"error": "the tool sums_nap timed out after 2000 ms"}
    assert again == {"plain_text_response": "2"}
