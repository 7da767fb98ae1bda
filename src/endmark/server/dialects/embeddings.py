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

Input = str | list[str] | list[int] | list[list[int]]


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
        return list(value)  # type: ignore[arg-type]


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
