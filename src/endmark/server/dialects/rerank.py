"""llama-server's reranking: `/rerank`, `/reranking`, `/v1/rerank`, `/v1/reranking`.

Jina's shape (`query`, `documents`, `top_n`; results with `relevance_score`), or TEI's when the
body has `texts` (a bare list with `score`, and `text` with `return_text`), as llama-server
answers: results sorted by score, best first, each naming its document's `index`, then cut to
`top_n`. A server that cannot rerank says why (`Runtime.reranking_problem`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import Field, model_validator

from endmark.server.dialects.fields import StrictModel
from endmark.server.http.errors import ApiError, parse_body
from endmark.server.http.state import runtime_of

router = APIRouter()


class RerankRequest(StrictModel):
    query: str
    documents: list[str] | None = None
    texts: list[str] | None = None  # TEI's name: answers in TEI's shape
    top_n: Annotated[int, Field(ge=0)] | None = None
    return_text: bool = False  # TEI: each result carries its document's text
    model: str | None = None

    @model_validator(mode="after")
    def _some_documents(self) -> RerankRequest:
        if not self.docs():
            raise ValueError('"documents" must be a non-empty string array')
        return self

    def docs(self) -> list[str]:
        return self.documents if self.documents is not None else self.texts or []

    @property
    def tei(self) -> bool:
        return self.texts is not None and self.documents is None


@router.post("/rerank")
@router.post("/reranking")
@router.post("/v1/rerank")
@router.post("/v1/reranking")
async def rerank(request: Request) -> Any:
    rt = runtime_of(request)
    req = await parse_body(request, RerankRequest)
    problem = await rt.reranking_problem()
    if problem is not None:
        raise ApiError(problem[0], problem[1], "model")
    docs = req.docs()
    scored = await rt.rerank(req.query, docs)
    label = "score" if req.tei else "relevance_score"
    results: list[dict[str, Any]] = []
    for i, (score, _) in enumerate(scored):
        item: dict[str, Any] = {"index": i, label: score}
        if req.tei and req.return_text:
            item["text"] = docs[i]
        results.append(item)
    results.sort(key=lambda r: -r[label])  # stable: equal scores keep the documents' order
    results = results[: len(results) if req.top_n is None else req.top_n]
    if req.tei:
        return results
    n_tokens = sum(n for _, n in scored)
    return {
        "model": req.model or rt.alias,
        "object": "list",
        "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
        "results": results,
    }
