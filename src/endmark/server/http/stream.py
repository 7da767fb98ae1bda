"""The stream writer every dialect uses: JSON bytes, server-sent events, NDJSON lines."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi.responses import StreamingResponse


def json_bytes(data: Any) -> bytes:
    """UTF-8 JSON, unescaped, as `json.dumps(ensure_ascii=False)` writes it, several times
    faster: a stream encodes one chunk per token on the event loop, which shares the cores
    with llama.cpp's threads."""
    return orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS)


def sse(data: dict[str, Any] | str, event: str | None = None) -> bytes:
    """One server-sent event: a JSON object, or a bare word such as `[DONE]`; named, where
    the dialect names its events (Anthropic's, the Responses API's)."""
    body = data.encode() if isinstance(data, str) else json_bytes(data)
    head = b"event: %s\n" % event.encode() if event else b""
    return head + b"data: " + body + b"\n\n"


def event_stream(chunks: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(chunks, media_type="text/event-stream")


def ndjson_stream(lines: AsyncIterator[dict[str, Any] | bytes]) -> StreamingResponse:
    """One JSON object a line (Ollama's streams); a line given as bytes is already encoded."""

    async def encoded() -> AsyncIterator[bytes]:
        async for line in lines:
            yield line if isinstance(line, bytes) else json_bytes(line) + b"\n"

    return StreamingResponse(encoded(), media_type="application/x-ndjson")
