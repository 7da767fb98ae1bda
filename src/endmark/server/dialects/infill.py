"""llama-server's `/infill`: code infilling. The request is a `/completion` request with the
code around the hole; the runtime builds the FIM prompt tokens (`endmark.infill`), and the
completion path does the rest, so every `/completion` option applies."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Request

from endmark.infill import InfillParts
from endmark.server.dialects.fields import StrictModel
from endmark.server.dialects.native import respond
from endmark.server.dialects.native_protocol import CompletionRequest
from endmark.server.http.errors import parse_body
from endmark.server.http.state import runtime_of
from endmark.spec import RequestSpec

router = APIRouter()

CodeText = str | list[str | int]  # llama-server's prefix and suffix: text, ids, or both


class ExtraChunk(StrictModel):
    """One file of extra context (llama-server's `input_extra` entry)."""

    text: str
    filename: str = "tmp"


class InfillRequest(CompletionRequest):
    input_prefix: CodeText
    input_suffix: CodeText
    input_extra: list[ExtraChunk] = []
    prompt: str = ""  # follows the FIM middle token  # type: ignore[assignment]

    def parts(self) -> InfillParts:
        extra = tuple((c.filename, c.text) for c in self.input_extra)
        return InfillParts(self.input_prefix, self.input_suffix, extra, self.prompt)

    def infill_spec(self, tokens: list[int]) -> RequestSpec:
        """The completion of the assembled prompt, with this request's options."""
        spec = self.model_copy(update={"prompt": tokens}).to_spec()
        return replace(spec, label="POST /infill")


@router.post("/infill")
async def infill(request: Request) -> Any:
    rt = runtime_of(request)
    req = await parse_body(request, InfillRequest)
    tokens = rt.infill_prompt(req.parts())
    return await respond(request, rt, req, req.infill_spec(tokens))
