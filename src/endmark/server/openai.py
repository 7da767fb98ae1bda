"""The OpenAI-compatible routes: `/v1/models`, `/v1/completions`, `/v1/chat/completions`.

Each response carries an `endmark` object (how it stopped, which token or word, timings), so
this dialect loses no detail against `/completion`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from endmark.generation import Done, Event, GenerationRequest, TokenEvent
from endmark.runtime import Runtime
from endmark.sampling import SamplingParams
from endmark.server.disconnect import unless_disconnected
from endmark.server.errors import ApiError, parse_body
from endmark.server.protocol import ChatCompletionRequest, CompletionsRequest, OpenAIFields
from endmark.server.state import runtime_of

router = APIRouter(prefix="/v1")

ChoiceFn = Callable[["Choice", TokenEvent | None, Done | None], dict[str, Any]]


@dataclass
class Choice:
    """One choice as it is being collected."""

    index: int
    text: list[str] = field(default_factory=list)
    tokens: list[TokenEvent] = field(default_factory=list)
    done: Done | None = None


def sse(data: dict[str, Any] | str) -> bytes:
    body = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {body}\n\n".encode()


def endmark_info(done: Done) -> dict[str, Any]:
    f = done.finish
    return {
        "stop_type": f.stop_type,
        "stopping_token": {"id": f.token.id, "text": f.token.text, "source": f.token.source}
        if f.token
        else None,
        "stopping_word": f.word,
        "truncated": f.truncated,
        "grammar_complete": f.grammar_complete,
        "tokens_cached": done.timings.cached_n,
        "timings": done.timings.as_dict(),
    }


def usage(requests: list[GenerationRequest], n: int, dones: dict[int, Done]) -> dict[str, Any]:
    """Each distinct prompt counts once, as OpenAI counts it for `n` > 1."""
    firsts = range(0, len(requests), n)
    prompt = sum(len(requests[k].prompt) for k in firsts)
    completion = sum(len(d.tokens) for d in dones.values())
    cached = sum(dones[k].timings.cached_n for k in firsts if k in dones)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def seeded(sampling: SamplingParams, i: int) -> SamplingParams:
    """Choice i of n gets seed + i, so choices differ but the request stays reproducible."""
    return sampling if sampling.seed < 0 or i == 0 else replace(sampling, seed=sampling.seed + i)


def finish_of(done: Done) -> dict[str, Any]:
    """The fields a choice's last chunk carries: OpenAI's reason and endmark's detail."""
    return {"finish_reason": done.finish.finish_reason, "endmark": endmark_info(done)}


def request_options(req: OpenAIFields, n_predict: int, label: str) -> dict[str, Any]:
    """What both endpoints pass to the runtime besides the prompt and sampling."""
    return {
        "n_predict": n_predict,
        "stop": req.stop,
        "ignore_eos": req.ignore_eos,
        "label": label,
        "time_limit_ms": req.t_max_predict_ms,
        "constraint": req.constraint(),
    }


def sampling_of(rt: Runtime, req: OpenAIFields, top_n: int, logprobs: bool) -> SamplingParams:
    return req.sampling_params(rt.logit_bias(req.bias_entries()), top_n, logprobs)


async def collect(events: AsyncGenerator[tuple[int, Event], None], n: int) -> list[Choice]:
    choices = [Choice(i) for i in range(n)]
    try:
        async for i, event in events:
            if isinstance(event, TokenEvent):
                choices[i].text.append(event.text)
                choices[i].tokens.append(event)
            elif isinstance(event, Done):
                choices[i].text.append(event.finish.tail)
                choices[i].done = event
            else:
                raise ApiError(500, event.message)
    finally:
        await events.aclose()
    return choices


async def stream_chunks(
    events: AsyncGenerator[tuple[int, Event], None],
    requests: list[GenerationRequest],
    n: int,
    head: dict[str, Any],
    start: Callable[[int], dict[str, Any]] | None,
    piece: ChoiceFn,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    """The SSE body shared by both endpoints; only the choice shapes differ."""
    dones: dict[int, Done] = {}

    def envelope(choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {**head, "choices": choices}

    try:
        if start is not None:
            for i in range(len(requests)):
                yield sse(envelope([start(i)]))
        async for i, event in events:
            choice = Choice(i)
            if isinstance(event, TokenEvent):
                yield sse(envelope([piece(choice, event, None)]))
            elif isinstance(event, Done):
                dones[i] = event
                choice.text.append(event.finish.tail)
                yield sse(envelope([piece(choice, None, event)]))
            else:
                yield sse({"error": {"message": event.message, "type": "server_error"}})
        if include_usage:
            yield sse({**envelope([]), "usage": usage(requests, n, dones)})
        yield sse("[DONE]")
    finally:
        await events.aclose()


def respond(
    rt: Runtime,
    requests: list[GenerationRequest],
    stream: bool,
    **kwargs: Any,
) -> Any:
    events = rt.stream_many(requests)
    if stream:
        return StreamingResponse(
            stream_chunks(events, requests, **kwargs), media_type="text/event-stream"
        )
    return events


def whole_response(
    head: dict[str, Any],
    choices: list[Choice],
    requests: list[GenerationRequest],
    n: int,
    render: Callable[[Choice], dict[str, Any]],
) -> JSONResponse:
    """A non-streaming answer: each choice as the endpoint renders it, plus how it ended."""
    dones = {c.index: c.done for c in choices if c.done is not None}
    body = {
        **head,
        "choices": [
            {
                "index": c.index,
                **render(c),
                "finish_reason": c.done.finish.finish_reason if c.done else "stop",
                "endmark": endmark_info(c.done) if c.done else None,
            }
            for c in choices
        ],
        "usage": usage(requests, n, dones),
        "endmark": endmark_info(dones[0]),
    }
    return JSONResponse(body)


def base(kind: str, rt: Runtime, prefix: str) -> dict[str, Any]:
    return {
        "id": f"{prefix}-{uuid.uuid4().hex}",
        "object": kind,
        "created": int(time.time()),
        "model": rt.alias,
        "system_fingerprint": "endmark",
    }


@router.get("/models")
async def models(request: Request) -> dict[str, Any]:
    rt = runtime_of(request)
    return {
        "object": "list",
        "data": [
            {
                "id": rt.alias,
                "object": "model",
                "created": int(rt.model_path.stat().st_mtime),
                "owned_by": "endmark",
                "meta": {"n_ctx": rt.engine.n_ctx, "n_vocab": rt.engine.vocab.n_vocab},
            }
        ],
    }


# -- chat ---------------------------------------------------------------------------------


def chat_logprobs(rt: Runtime, tokens: list[TokenEvent], top_n: int) -> dict[str, Any]:
    def entry(token: int, logprob: float) -> dict[str, Any]:
        return {"token": rt.token_text(token), "logprob": logprob, "bytes": rt.token_bytes(token)}

    content = []
    for e in tokens:
        item = entry(e.token, e.logprob if e.logprob is not None else 0.0)
        item["top_logprobs"] = [entry(t, lp) for t, lp in e.top[:top_n]]
        content.append(item)
    return {"content": content, "refusal": None}


@router.post("/chat/completions")
async def chat_completions(request: Request) -> Any:
    rt = runtime_of(request)
    req = await parse_body(request, ChatCompletionRequest)
    messages = [m.as_template_input() for m in req.messages]
    top_n = (req.top_logprobs or 0) if req.logprobs else 0
    sampling = sampling_of(rt, req, top_n, req.logprobs)
    common = request_options(req, req.n_predict, "POST /v1/chat/completions")
    requests = [rt.chat_request(messages, seeded(sampling, i), **common) for i in range(req.n)]
    head = base("chat.completion.chunk", rt, "chatcmpl")

    def piece(choice: Choice, token: TokenEvent | None, done: Done | None) -> dict[str, Any]:
        out: dict[str, Any] = {"index": choice.index, "delta": {}, "logprobs": None}
        if token is not None:
            out["delta"] = {"content": token.text}
            if req.logprobs:
                out["logprobs"] = chat_logprobs(rt, [token], top_n)
            out["finish_reason"] = None
        elif done is not None:
            if done.finish.tail:
                out["delta"] = {"content": done.finish.tail}
            out.update(finish_of(done))
        return out

    result = respond(
        rt,
        requests,
        req.stream,
        n=req.n,
        head=head,
        start=lambda i: {
            "index": i,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        },
        piece=piece,
        include_usage=req.include_usage,
    )
    if req.stream:
        return result
    choices = await unless_disconnected(request, collect(result, req.n))
    return whole_response(
        base("chat.completion", rt, "chatcmpl"),
        choices,
        requests,
        req.n,
        lambda c: {
            "message": {"role": "assistant", "content": "".join(c.text)},
            "logprobs": chat_logprobs(rt, c.tokens, top_n) if req.logprobs else None,
        },
    )


# -- legacy completions --------------------------------------------------------------------


def completion_logprobs(
    rt: Runtime, tokens: list[TokenEvent], top_n: int, offset: int = 0
) -> dict[str, Any]:
    texts = [rt.token_text(e.token) for e in tokens]
    offsets = []
    for text in texts:
        offsets.append(offset)
        offset += len(text)
    return {
        "tokens": texts,
        "token_logprobs": [e.logprob for e in tokens],
        "top_logprobs": [{rt.token_text(t): lp for t, lp in e.top[:top_n]} for e in tokens],
        "text_offset": offsets,
    }


@router.post("/completions")
async def completions(request: Request) -> Any:
    rt = runtime_of(request)
    req = await parse_body(request, CompletionsRequest)
    if req.echo or req.suffix:
        raise ApiError(400, "echo and suffix are not supported", "echo" if req.echo else "suffix")
    top_n = req.logprobs or 0
    sampling = sampling_of(rt, req, top_n, req.logprobs is not None)
    prompts = req.prompts()
    common = request_options(req, req.n_predict, "POST /v1/completions")
    requests = [
        rt.make_request(prompt, seeded(sampling, i), **common)
        for prompt in prompts
        for i in range(req.n)
    ]
    head = base("text_completion", rt, "cmpl")

    def piece(choice: Choice, token: TokenEvent | None, done: Done | None) -> dict[str, Any]:
        out: dict[str, Any] = {"index": choice.index, "text": "", "logprobs": None}
        out["finish_reason"] = None
        if token is not None:
            out["text"] = token.text
            if req.logprobs is not None:
                out["logprobs"] = completion_logprobs(rt, [token], top_n)
        elif done is not None:
            out["text"] = done.finish.tail
            out.update(finish_of(done))
        return out

    result = respond(
        rt,
        requests,
        req.stream,
        n=req.n,
        head=head,
        start=None,
        piece=piece,
        include_usage=req.include_usage,
    )
    if req.stream:
        return result
    choices = await unless_disconnected(request, collect(result, len(requests)))
    return whole_response(
        base("text_completion", rt, "cmpl"),
        choices,
        requests,
        req.n,
        lambda c: {
            "text": "".join(c.text),
            "logprobs": completion_logprobs(rt, c.tokens, top_n)
            if req.logprobs is not None
            else None,
        },
    )
