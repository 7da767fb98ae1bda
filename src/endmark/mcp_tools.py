"""Tools from MCP servers, as llama-server's `--mcp-servers-config` / `--mcp-servers-json`.

Servers are declared in Cursor's format, `{"mcpServers": {name: {command, args, env, cwd,
timeout_ms}}}`, and spoken to over stdio with the official `mcp` SDK. Each is spawned once at
start to list its tools, then stopped; a call respawns it on demand and keeps it for the calls
that follow. Tools are exposed as `<server>_<tool>`. A call never hangs and never raises: a
timeout, a failed spawn or an error from the tool becomes a result that says so.

The SDK's transport holds anyio cancel scopes that must close in the task that opened them,
so each live server is held open by a task of its own (`_Connection`); calls come from
request handlers in other tasks, which the SDK's session allows.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("endmark.mcp")

DEFAULT_TIMEOUT_MS = 30_000  # per call, llama-server's default
WARMUP_TIMEOUT_S = 10.0  # listing one server's tools at start (llama-server's)


class McpConfigError(ValueError):
    """The MCP servers' JSON cannot be read."""


@dataclass(frozen=True)
class McpServerConfig:
    name: str
    command: str
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    timeout_ms: int = DEFAULT_TIMEOUT_MS


def parse_mcp_servers(text: str) -> list[McpServerConfig]:
    """Cursor's `mcpServers` object. An entry without `command` is skipped, as llama-server
    does; anything else malformed is a `McpConfigError`."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise McpConfigError(f"the MCP servers' JSON does not parse: {exc}") from None
    servers = data.get("mcpServers") if isinstance(data, dict) else None
    if not isinstance(servers, dict):
        raise McpConfigError('the MCP servers\' JSON needs an object "mcpServers"')
    configs = []
    for name, entry in servers.items():
        if not isinstance(entry, dict) or not entry.get("command"):
            log.warning("MCP server %r has no command, skipping", name)
            continue
        try:
            configs.append(_config(name, entry))
        except (TypeError, ValueError) as exc:
            raise McpConfigError(f"MCP server {name!r}: {exc}") from None
    return configs


def _config(name: str, entry: dict[str, Any]) -> McpServerConfig:
    args, env = entry.get("args") or [], entry.get("env") or {}
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise TypeError("args must be an array of strings")
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise TypeError("env must be an object of strings")
    timeout_ms = entry.get("timeout_ms", DEFAULT_TIMEOUT_MS)
    if not isinstance(timeout_ms, int) or timeout_ms <= 0:
        raise ValueError("timeout_ms must be a positive whole number")
    cwd = entry.get("cwd") or None
    return McpServerConfig(name, str(entry["command"]), tuple(args), env, cwd, timeout_ms)


def read_mcp_servers(config_file: str | None, inline_json: str | None) -> list[McpServerConfig]:
    """Both sources, the file first; a server name seen twice is skipped with a log line."""
    texts = []
    if config_file:
        try:
            texts.append(Path(config_file).expanduser().read_text(encoding="utf-8"))
        except OSError as exc:
            raise McpConfigError(f"cannot read the MCP config file: {exc}") from None
    if inline_json:
        texts.append(inline_json)
    configs: dict[str, McpServerConfig] = {}
    for text in texts:
        for config in parse_mcp_servers(text):
            if config.name in configs:
                log.warning("MCP config: duplicate server name %r, skipping", config.name)
                continue
            configs[config.name] = config
    return list(configs.values())


@dataclass(frozen=True)
class McpTool:
    server: str
    name: str
    description: str
    input_schema: dict[str, Any]

    @property
    def exposed(self) -> str:
        return f"{self.server}_{self.name}"

    def card(self) -> dict[str, Any]:
        """One entry of `GET /tools`, in llama-server's shape."""
        return {
            "display_name": self.exposed,
            "tool": self.exposed,
            "type": "mcp",
            "permissions": {"write": False},
            "uses_cwd": False,
            "definition": {
                "type": "function",
                "function": {
                    "name": self.exposed,
                    "description": self.description,
                    "parameters": self.input_schema,
                },
            },
        }


class _Connection:
    """One running server, held open by a task of its own until `close`."""

    def __init__(self, config: McpServerConfig) -> None:
        self.config = config
        self.session: Any = None
        self._release = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def open(self, timeout_s: float) -> Any:
        ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._hold(ready), name=f"mcp-{self.config.name}")
        try:
            return await asyncio.wait_for(asyncio.shield(ready), timeout_s)
        except BaseException:
            await self.close()
            raise

    async def _hold(self, ready: asyncio.Future[Any]) -> None:
        from mcp import ClientSession, StdioServerParameters
        from mcp.client.stdio import stdio_client

        c = self.config
        params = StdioServerParameters(
            command=c.command, args=list(c.args), env={**os.environ, **c.env}, cwd=c.cwd
        )
        try:
            async with stdio_client(params) as (read, write), ClientSession(read, write) as s:
                await s.initialize()
                self.session = s
                ready.set_result(s)
                await self._release.wait()
        except BaseException as exc:  # a failed spawn, a dead child, cancellation
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else RuntimeError(exc))
            elif not isinstance(exc, asyncio.CancelledError):
                log.warning("MCP server %r stopped: %s", c.name, exc)
        finally:
            self.session = None

    async def close(self) -> None:
        self._release.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 5)
            except BaseException:  # noqa: S110 - a child that will not stop is killed below
                self._task.cancel()


def result_text(result: Any) -> dict[str, str]:
    """An MCP `tools/call` result as llama-server's `/tools` answers it: the text parts joined,
    under `plain_text_response`, or under `error` when the tool says it failed."""
    parts = [p.text for p in getattr(result, "content", None) or [] if p.type == "text"]
    text = "\n".join(parts)
    if getattr(result, "is_error", False):
        return {"error": text or "MCP tool returned an error"}
    return {"plain_text_response": text}


class McpTools:
    """The tools of the configured servers, and their live connections."""

    def __init__(self, configs: list[McpServerConfig]) -> None:
        self.configs = {c.name: c for c in configs}
        self.tools: dict[str, McpTool] = {}
        self._live: dict[str, _Connection] = {}
        self._locks = {name: asyncio.Lock() for name in self.configs}
        self._closing: set[asyncio.Task[None]] = set()

    def __bool__(self) -> bool:
        return bool(self.configs)

    async def discover(self) -> None:
        """Spawn every server at once, list its tools, stop it. A server that fails is
        logged and lists nothing; a name already taken is skipped with a log line."""
        found = await asyncio.gather(*(self._list(c) for c in self.configs.values()))
        for tools in found:
            for tool in tools:
                if tool.exposed in self.tools:
                    log.warning("MCP tool %r from server %r collides with an existing tool, "
                                "skipping", tool.exposed, tool.server)  # fmt: skip
                    continue
                self.tools[tool.exposed] = tool
        log.info("MCP: %d tool(s) from %d server(s)", len(self.tools), len(self.configs))

    async def _list(self, config: McpServerConfig) -> list[McpTool]:
        connection = _Connection(config)
        try:
            session = await connection.open(WARMUP_TIMEOUT_S)
            tools, cursor = [], None
            while True:
                from mcp import types

                page = await asyncio.wait_for(
                    session.list_tools(params=types.PaginatedRequestParams(cursor=cursor)),
                    WARMUP_TIMEOUT_S,
                )
                tools += [
                    McpTool(config.name, t.name, t.description or "", dict(t.input_schema or {}))
                    for t in page.tools
                ]
                cursor = page.next_cursor
                if not cursor:
                    break
            log.info("MCP: %r lists %d tool(s)", config.name, len(tools))
            return tools
        except Exception as exc:
            log.warning("MCP: cannot list the tools of %r: %s", config.name, _reason(exc))
            return []
        finally:
            self._close_later(connection)

    def cards(self) -> list[dict[str, Any]]:
        return [tool.card() for tool in self.tools.values()]

    async def call(self, exposed: str, arguments: dict[str, Any]) -> dict[str, str]:
        """Run one tool (`KeyError` if there is none of that name): past the server's
        `timeout_ms`, an error result that says it timed out."""
        tool = self.tools[exposed]
        config = self.configs[tool.server]
        timeout_s = config.timeout_ms / 1000
        try:  # a spawn gets the start's bound: a short timeout_ms is for the tool's work
            session = await self._session(config, max(timeout_s, WARMUP_TIMEOUT_S))
        except Exception as exc:
            return {"error": f"MCP server {config.name!r} unavailable: {_reason(exc)}"}
        try:
            result = await asyncio.wait_for(
                session.call_tool(tool.name, arguments, read_timeout_seconds=timeout_s),
                timeout_s + 1,
            )
        except Exception as exc:  # a timeout or a dead server: the next call respawns it
            self._drop(config.name)
            if _timed_out(exc):
                return {"error": f"the tool {exposed} timed out after {config.timeout_ms} ms"}
            return {"error": f"the tool {exposed} failed: {_reason(exc)}"}
        return result_text(result)

    async def _session(self, config: McpServerConfig, timeout_s: float) -> Any:
        async with self._locks[config.name]:
            live = self._live.get(config.name)
            if live is not None and live.session is not None:
                return live.session
            live = _Connection(config)
            session = await live.open(timeout_s)
            self._live[config.name] = live
            return session

    def _drop(self, name: str) -> None:
        live = self._live.pop(name, None)
        if live is not None:
            self._close_later(live)

    def _close_later(self, connection: _Connection) -> None:
        """Closing waits for the child to exit (up to seconds): not in a caller's time."""
        task = asyncio.get_running_loop().create_task(connection.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        live, self._live = list(self._live.values()), {}
        closing = [c.close() for c in live] + list(self._closing)
        await asyncio.gather(*closing, return_exceptions=True)


def _timed_out(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError) or "timed out" in str(exc).lower()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        return _reason(exc.exceptions[0])
    return str(exc) or type(exc).__name__
