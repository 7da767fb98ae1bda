"""The llama.cpp-native routes: `/completion`, `/tokenize`, `/detokenize`, `/health`, `/props`."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from endmark.generation import Done, Event, Failed, TokenEvent
from endmark.runtime import Runtime
from endmark.server.disconnect import unless_disconnected
from endmark.server.errors import ApiError, parse_body
from endmark.server.protocol import (
    ApplyTemplateRequest,
    CompletionRequest,
    DetokenizeRequest,
    TokenizeRequest,
)
from endmark.server.state import loading_state, runtime_of

router = APIRouter()


def sse(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def token_probs(rt: Runtime, event: TokenEvent) -> dict[str, Any]:
    """One `completion_probabilities` entry, in llama-server's logprob format."""

    def entry(token: int, logprob: float) -> dict[str, Any]:
        return {
            "id": token,
            "token": rt.token_text(token),
            "bytes": rt.token_bytes(token),
            "logprob": logprob,
        }

    out = entry(event.token, event.logprob if event.logprob is not None else 0.0)
    out["top_logprobs"] = [entry(t, lp) for t, lp in event.top]
    return out


def finish_fields(rt: Runtime, req: CompletionRequest, done: Done) -> dict[str, Any]:
    """Everything the last response (or last stream chunk) says about how it ended."""
    f = done.finish
    return {
        "model": rt.alias,
        "stop": True,
        "stop_type": f.stop_type,
        "stopping_word": f.word or "",
        "stopping_token": {"id": f.token.id, "text": f.token.text, "source": f.token.source}
        if f.token
        else None,
        "tokens_predicted": len(done.tokens),
        "tokens_evaluated": done.n_prompt,
        "tokens_cached": done.timings.cached_n,
        "truncated": f.truncated,
        "grammar_complete": f.grammar_complete,
        "timings": done.timings.as_dict(),
        "generation_settings": settings_of(req),
    }


def settings_of(req: CompletionRequest) -> dict[str, Any]:
    return req.model_dump(exclude={"prompt", "stream"})


@router.post("/completion")
@router.post("/completions")
async def completion(request: Request) -> Any:
    rt = runtime_of(request)
    req = await parse_body(request, CompletionRequest)
    gen = rt.make_request(
        req.prompt,
        req.sampling_params(rt.logit_bias(req.bias_entries())),
        n_predict=req.n_predict,
        stop=req.stop,
        ignore_eos=req.ignore_eos,
        cache_prompt=req.cache_prompt,
        label="POST /completion",
        time_limit_ms=req.t_max_predict_ms,
        constraint=req.constraint(),
    )
    events = rt.stream(gen)
    if req.stream:
        return StreamingResponse(_stream(rt, req, events), media_type="text/event-stream")
    return JSONResponse(await unless_disconnected(request, _collect(rt, req, events)))


async def _collect(
    rt: Runtime, req: CompletionRequest, events: AsyncGenerator[Event, None]
) -> dict[str, Any]:
    content: list[str] = []
    probs: list[dict[str, Any]] = []
    try:
        async for event in events:
            if isinstance(event, TokenEvent):
                content.append(event.text)
                if req.n_probs:
                    probs.append(token_probs(rt, event))
            elif isinstance(event, Failed):
                raise ApiError(500, event.message)
            elif isinstance(event, Done):
                content.append(event.finish.tail)
                body = {
                    "index": 0,
                    "content": "".join(content),
                    "tokens": list(event.tokens) if req.return_tokens else [],
                    **finish_fields(rt, req, event),
                }
                if req.n_probs:
                    body["completion_probabilities"] = probs
                return body
    finally:
        await events.aclose()
    raise ApiError(500, "the generation ended without a result")


async def _stream(
    rt: Runtime, req: CompletionRequest, events: AsyncGenerator[Event, None]
) -> AsyncIterator[bytes]:
    try:
        async for event in events:
            if isinstance(event, TokenEvent):
                chunk: dict[str, Any] = {
                    "index": 0,
                    "content": event.text,
                    "tokens": [event.token],
                    "stop": False,
                }
                if req.n_probs:
                    chunk["completion_probabilities"] = [token_probs(rt, event)]
                yield sse(chunk)
            elif isinstance(event, Failed):
                yield sse(
                    {"error": {"code": 500, "message": event.message, "type": "server_error"}}
                )
            else:
                yield sse(
                    {
                        "index": 0,
                        "content": event.finish.tail,
                        "tokens": list(event.tokens) if req.return_tokens else [],
                        **finish_fields(rt, req, event),
                    }
                )
    finally:
        await events.aclose()


@router.post("/apply-template")
async def apply_template(request: Request) -> dict[str, Any]:
    rt = runtime_of(request)
    req = await parse_body(request, ApplyTemplateRequest)
    return {"prompt": rt.render_chat([m.as_template_input() for m in req.messages])}


@router.post("/tokenize")
async def tokenize(request: Request) -> dict[str, Any]:
    rt = runtime_of(request)
    req = await parse_body(request, TokenizeRequest)
    return {"tokens": rt.tokenize(req.content, req.add_special, req.parse_special, req.with_pieces)}


@router.post("/detokenize")
async def detokenize(request: Request) -> dict[str, Any]:
    rt = runtime_of(request)
    req = await parse_body(request, DetokenizeRequest)
    return {"content": rt.detokenize(req.tokens)}


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    state = loading_state(request)
    if state.runtime is not None:
        return JSONResponse({"status": "ok"})
    if state.error:
        raise ApiError(500, f"the model failed to load: {state.error}")
    raise ApiError(503, f"Loading model ({state.progress:.0%})")


@router.get("/props")
async def props(request: Request) -> dict[str, Any]:
    rt = runtime_of(request)
    defaults = CompletionRequest(prompt="")
    return {
        "model_path": str(rt.model_path),
        "model_alias": rt.alias,
        "n_ctx": rt.engine.n_ctx,
        "n_ctx_slot": rt.scheduler.n_ctx_slot,
        "total_slots": len(rt.scheduler.slots),
        "n_vocab": rt.engine.vocab.n_vocab,
        "eog_tokens": rt.eog_tokens(),
        "default_generation_settings": {"n_ctx": rt.scheduler.n_ctx_slot, **settings_of(defaults)},
        "chat_template": rt.template.source if rt.template else "",
        "chat_template_error": rt.template_error,
        "build_info": "endmark",
    }


@router.get("/slots")
async def slots(request: Request) -> list[dict[str, object]]:
    return runtime_of(request).scheduler.slot_states()
