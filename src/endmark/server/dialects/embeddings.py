"""Embeddings: OpenAI's `/v1/embeddings`, and llama-server's `/embedding` and `/embeddings`.

The vectors come from a second llama.cpp context on the same weights (`Runtime.embed`), decoded
on the scheduler's thread between two generation steps.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Request
from pydantic import Field

from endmark.embeddings import EUCLIDEAN
from endmark.runtime import Runtime
from endmark.server.dialects.fields import StrictModel
from endmark.server.http.errors import ApiError, parse_body
from endmark.server.http.state import runtime_of

router = APIRouter()

# a text, token ids, or a list of texts, token-id lists and `{"content": [parts]}` objects
Input = str | list[int] | list[str | list[int] | dict[str, Any]]
MEDIA = {"image_url": "image", "input_audio": "audio", "input_video": "video"}


def content_text(item: dict[str, Any]) -> str:
    """An input given as `{"content": [parts]}` (llama-server's, for multimodal models): its
    text parts, as one text; media is refused as llama-server refuses it without a projector."""
    parts = item.get("content")
    if set(item) != {"content"} or not isinstance(parts, list) or not parts:
        raise ApiError(400, 'an input object must be {"content": [parts]}', "input")
    texts = []
    for part in parts:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in MEDIA:
            message = f"{MEDIA[kind]} input is not supported - hint: if this is unexpected, " \
                "you may need to provide the mmproj"  # fmt: skip
            raise ApiError(400, message, "input")
        if kind != "text" or not isinstance(part.get("text"), str):
            raise ApiError(400, f"unsupported content part type: {kind!r}", "input")
        texts.append(part["text"])
    return "".join(texts)


class EmbeddingsRequest(StrictModel):
    input: Input | None = None
    content: Input | None = None  # llama-server's name on /embedding
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    embd_normalize: Annotated[int, Field(ge=-1)] = EUCLIDEAN

    def inputs(self) -> list[str | list[int]]:
        """OpenAI's input forms as a list: texts, or token-id lists."""
        value = self.input if self.input is not None else self.content
        if value is None:
            raise ApiError(400, '"input" or "content" must be provided', "input")
        if isinstance(value, str):
            return [value]
        if value and all(isinstance(x, int) for x in value):
            return [value]  # type: ignore[list-item]
        return [content_text(x) if isinstance(x, dict) else x for x in value]  # type: ignore[misc]


async def vectors(rt: Runtime, req: EmbeddingsRequest) -> tuple[list[np.ndarray], int]:
    return await rt.embed(req.inputs(), req.embd_normalize)


@router.post("/v1/embeddings")
async def openai_embeddings(request: Request) -> dict[str, Any]:
    rt = runtime_of(request)
    req = await parse_body(request, EmbeddingsRequest)
    if await rt.embedding_pooling() == "none":
        raise ApiError(
            400,
            "pooling 'none' gives a vector per token, which OpenAI's embeddings cannot carry: "
            "start endmark with --pooling mean, cls or last",
            "input",
        )
    found, n_tokens = await vectors(rt, req)

    def encoded(v: np.ndarray) -> list[float] | str:
        if req.encoding_format == "base64":
            return base64.b64encode(v.astype("<f4").tobytes()).decode()
        return v.tolist()

    data = [{"object": "embedding", "index": i, "embedding": encoded(v)}
            for i, v in enumerate(found)]  # fmt: skip
    usage = {"prompt_tokens": n_tokens, "total_tokens": n_tokens}
    return {"object": "list", "data": data, "model": rt.alias, "usage": usage}


@router.post("/embedding")
@router.post("/embeddings")
async def llama_embeddings(request: Request) -> list[dict[str, Any]]:
    """llama-server's shape: per input, a list of vectors (one, or one per token)."""
    rt = runtime_of(request)
    req = await parse_body(request, EmbeddingsRequest)
    found, _ = await vectors(rt, req)
    return [{"index": i, "embedding": v.reshape(-1, v.shape[-1]).tolist()}
            for i, v in enumerate(found)]  # fmt: skip
