"""The llama.cpp-native routes: `/completion`, `/tokenize`, `/detokenize`, `/health`, `/props`."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from endmark.generation import Done, Failed, GenerationRequest, Progress, TokenEvent
from endmark.runtime import Runtime
from endmark.sampling import SamplingParams
from endmark.server.dialects.native_protocol import (
    NATIVE,
    CompletionRequest,
    DetokenizeRequest,
    TokenizeRequest,
)
from endmark.server.dialects.openai_protocol import ApplyTemplateRequest
from endmark.server.dialects.results import Answer, Events, Follow, collect, stopping_token
from endmark.server.http.disconnect import unless_disconnected
from endmark.server.http.errors import ApiError, parse_body
from endmark.server.http.state import loading_state, runtime_of
from endmark.server.http.stream import event_stream, sse
from endmark.spec import RequestSpec

router = APIRouter()


def token_probs(rt: Runtime, event: TokenEvent, post_sampling: bool) -> dict[str, Any]:
    """One `completion_probabilities` entry, in llama-server's format: logprobs, or with
    `post_sampling_probs` the probabilities after the sampling chain."""

    def entry(token: int, logprob: float) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": token,
            "token": rt.token_text(token),
            "bytes": rt.token_bytes(token),
        }
        if post_sampling:
            out["prob"] = math.exp(logprob)
        else:
            out["logprob"] = logprob
        return out

    out = entry(event.token, event.logprob if event.logprob is not None else 0.0)
    out["top_probs" if post_sampling else "top_logprobs"] = [entry(t, lp) for t, lp in event.top]
    return out


def params_json(gen: GenerationRequest, stream: bool) -> dict[str, Any]:
    """llama-server's `generation_settings`: the values the request actually ran with."""
    s: SamplingParams = gen.sampling
    policy = gen.policy
    bias = [{"bias": b if math.isfinite(b) else None, "token": t} for t, b in s.logit_bias.items()]
    if policy is not None and policy.ignore_eos:  # the end tokens are banned: -inf, null in JSON
        bias += [{"bias": None, "token": t} for t in policy.eog.ids()]
    n_predict = policy.n_predict if policy is not None else -1
    return {
        "seed": s.seed,
        "temperature": s.temperature,
        "top_k": s.top_k,
        "top_p": s.top_p,
        "min_p": s.min_p,
        "repeat_last_n": s.repeat_last_n,
        "repeat_penalty": s.repeat_penalty,
        "presence_penalty": s.presence_penalty,
        "frequency_penalty": s.frequency_penalty,
        "adaptive_target": -1.0,
        "adaptive_decay": 0.9,
        "stop": list(policy.stop) if policy is not None else [],
        "max_tokens": n_predict,
        "n_predict": n_predict,
        "ignore_eos": bool(policy and policy.ignore_eos),
        "stream": stream,
        "logit_bias": bias,
        "n_probs": s.n_probs,
        "post_sampling_probs": s.post_sampling_probs,
        "timings_per_token": gen.timings_per_token,
        "cache_prompt": gen.cache_prompt,
        "n_keep": gen.n_keep,
        "n_cache_reuse": gen.cache_reuse,
        "t_max_predict_ms": policy.time_limit_ms if policy is not None else 0,
        "grammar_constrained": gen.constraint is not None,
        "lora": [{"id": i, "scale": scale} for i, scale in gen.adapters],
    }


def finish_fields(rt: Runtime, gen: GenerationRequest, done: Done, stream: bool) -> dict[str, Any]:
    """Everything the last response (or last stream chunk) says about how it ended."""
    f = done.finish
    return {
        "model": rt.alias,
        "stop": True,
        "stop_type": f.stop_type,
        "stopping_word": f.word or "",
        "stopping_token": stopping_token(f),
        "tokens_predicted": len(done.tokens),
        "tokens_evaluated": done.n_prompt,
        "tokens_cached": done.timings.cached_n,
        "truncated": f.truncated,
        "grammar_complete": f.grammar_complete,
        "truncated_json_closed": f.json_closed,
        **({"constraint_error": f.constraint_error} if f.constraint_error else {}),
        "timings": done.timings.as_dict(),
        "generation_settings": params_json(gen, stream),
        "prompt": rt.prompt_text(gen.prompt),
    }


def final_body(
    rt: Runtime,
    req: CompletionRequest,
    gen: GenerationRequest,
    answer: Answer,
    stream: bool,
) -> dict[str, Any]:
    """A prompt's whole answer, or a stream's last chunk (whose content is only the tail)."""
    done = answer.done
    assert done is not None
    body: dict[str, Any] = {
        "index": answer.index,
        "content": done.delta.content if stream else answer.content,
        "tokens": list(done.tokens) if req.return_tokens else [],
        "id_slot": -1,
        "has_new_line": "\n" in answer.content,
        **finish_fields(rt, gen, done, stream),
    }
    if req.n_probs and not stream:
        body["completion_probabilities"] = [
            token_probs(rt, e, req.post_sampling_probs) for e in answer.tokens
        ]
    return pick_fields(body, req.response_fields)


def pick_fields(body: dict[str, Any], paths: list[str]) -> dict[str, Any]:
    """llama-server's `response_fields`: only these, `a/b` lifting a nested value to the top."""
    if not paths:
        return body
    out: dict[str, Any] = {}
    for path in paths:
        value: Any = body
        for key in path.split("/"):
            if not isinstance(value, dict) or key not in value:
                break
            value = value[key]
        else:
            out[path] = value
    return out


@router.post("/completion")
@router.post("/completions")
async def completion(request: Request) -> Any:
    rt = runtime_of(request)
    req = await parse_body(request, CompletionRequest)
    return await respond(request, rt, req, req.to_spec())


async def respond(request: Request, rt: Runtime, req: CompletionRequest, spec: RequestSpec) -> Any:
    """A completion's answer, whole or streamed (`/infill` answers the same way)."""
    gens = await rt.prepare_async(spec)
    events = rt.stream_many(gens, whole=not req.stream)
    if req.stream:
        return event_stream(_stream(rt, req, gens, events))
    answers = await unless_disconnected(request, collect(events, len(gens)))
    bodies = [final_body(rt, req, gens[a.index], a, stream=False) for a in answers]
    return JSONResponse(bodies[0] if len(bodies) == 1 else bodies)


async def _stream(
    rt: Runtime, req: CompletionRequest, gens: list[GenerationRequest], events: Events
) -> AsyncIterator[bytes]:
    async with aclosing(Follow(events, len(gens))) as steps:
        async for answer, event, delta in steps:
            i = answer.index
            if isinstance(event, TokenEvent):
                chunk: dict[str, Any] = {
                    "index": i,
                    "content": delta.content,
                    "tokens": [event.token],
                    "stop": False,
                    "id_slot": -1,
                }
                if req.n_probs:
                    chunk["completion_probabilities"] = [
                        token_probs(rt, event, req.post_sampling_probs)
                    ]
                if event.timings is not None:
                    chunk["timings"] = event.timings.as_dict()
                yield sse(chunk)
            elif isinstance(event, Progress):
                yield sse(
                    {
                        "index": i,
                        "content": "",
                        "tokens": [],
                        "stop": False,
                        "prompt_progress": event.as_dict(),
                    }
                )
            elif isinstance(event, Failed):
                yield NATIVE.failure(rt.alias, event.message)
            else:
                yield sse(final_body(rt, req, gens[i], answer, stream=True))


@router.post("/apply-template")
async def apply_template(request: Request) -> dict[str, Any]:
    rt = runtime_of(request)
    req = await parse_body(request, ApplyTemplateRequest)
    return {"prompt": rt.apply_template(req.to_chat())}


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
@router.get("/v1/health")
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
    (defaults,) = rt.prepare(CompletionRequest(prompt=[0]).to_spec())  # a request of no fields
    return {
        "model_path": str(rt.model_path),
        "model_alias": rt.alias,
        "model_aliases": rt.settings.aliases() or [rt.alias],
        "n_ctx": rt.n_ctx,
        "n_ctx_slot": rt.n_ctx_slot,
        "total_slots": rt.n_slots,
        "n_vocab": rt.n_vocab,
        "eog_tokens": rt.eog_tokens(),
        "end_of_turn_text": rt.learned.end_text,  # the turn's end tag, where no token writes it
        "default_generation_settings": {
            "id": 0,
            "n_ctx": rt.n_ctx_slot,
            "is_processing": False,
            "params": params_json(defaults, stream=False),
        },
        "chat_template": rt.learned.template.source if rt.learned.template else "",
        "tool_call_format": rt.tool_call_format(),
        "chat_template_error": rt.learned.template_error,
        "build_info": "endmark",
        "endpoint_slots": rt.settings.slots_endpoint,
        "endpoint_props": rt.settings.props,
        "endpoint_metrics": rt.settings.metrics,
    }


@router.post("/props")
async def change_props(request: Request) -> dict[str, Any]:
    """llama-server's: refused without `--props`; with it, there is nothing to change yet."""
    rt = runtime_of(request)
    if not rt.settings.props:
        raise ApiError(
            501,
            "This server does not support changing global properties. Start it with `--props`",
        )
    return {"success": True}


@router.get("/slots")
async def slots(request: Request) -> list[dict[str, object]]:
    rt = runtime_of(request)
    if not rt.settings.slots_endpoint:
        raise ApiError(501, "the /slots endpoint is off: start the server with --slots")
    return rt.slot_states()
