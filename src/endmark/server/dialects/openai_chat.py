"""The OpenAI chat routes: `/v1/chat/completions` (also without `/v1`) and llama-server's
`/chat/completions/input_tokens`. The plumbing both `/v1` endpoints share is in `openai.py`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from endmark.calls import Reasoning
from endmark.channels import ToolCall
from endmark.generation import Done, GenerationRequest, Progress, TokenEvent
from endmark.runtime import Runtime
from endmark.server.dialects.openai_protocol import ChatCompletionRequest
from endmark.server.dialects.openai_shared import (
    base,
    finish_of,
    request_options,
    sampling_of,
    seeded,
    stream_chunks,
    verbose_info,
    whole_response,
)
from endmark.server.dialects.results import Answer, collect
from endmark.server.http.disconnect import unless_disconnected
from endmark.server.http.errors import parse_body
from endmark.server.http.state import runtime_of
from endmark.server.http.stream import event_stream

router = APIRouter()


def chat_logprobs(rt: Runtime, tokens: list[TokenEvent], top_n: int) -> dict[str, Any]:
    def entry(token: int, logprob: float) -> dict[str, Any]:
        return {"token": rt.token_text(token), "logprob": logprob, "bytes": rt.token_bytes(token)}

    content = []
    for e in tokens:
        item = entry(e.token, e.logprob if e.logprob is not None else 0.0)
        item["top_logprobs"] = [entry(t, lp) for t, lp in e.top[:top_n]]
        content.append(item)
    return {"content": content, "refusal": None}


def chat_requests(rt: Runtime, req: ChatCompletionRequest) -> list[GenerationRequest]:
    messages = [m.as_template_input() for m in req.messages]
    top_n = (req.top_logprobs or 0) if req.logprobs else 0
    sampling = sampling_of(rt, req, top_n, req.logprobs)
    common = request_options(rt, req, req.n_predict, "POST /v1/chat/completions")
    return [
        rt.chat_request(
            messages,
            seeded(sampling, i),
            add_generation_prompt=req.add_generation_prompt,
            continue_final_message=req.continue_final_message,
            tools=req.tool_request(),
            reasoning=Reasoning(
                req.reasoning_format or rt.settings.reasoning_format,
                rt.settings.reasoning_budget
                if req.reasoning_budget is None
                else req.reasoning_budget,
            ),
            **common,
        )
        for i in range(req.n)
    ]


@router.post("/v1/chat/completions")
@router.post("/chat/completions")
async def chat_completions(request: Request) -> Any:
    rt = runtime_of(request)
    req = await parse_body(request, ChatCompletionRequest)
    top_n = (req.top_logprobs or 0) if req.logprobs else 0
    requests = chat_requests(rt, req)
    head = base("chat.completion.chunk", rt, "chatcmpl")

    calls_sent = [0] * req.n  # each choice's calls so far: a call's index in the stream

    def deltas(i: int, text: str, reasoning: str, calls: tuple[ToolCall, ...]) -> list[Any]:
        out: list[dict[str, Any]] = []
        if reasoning:
            out.append({"reasoning_content": reasoning})
        if text:
            out.append({"content": text})
        for call in calls:
            out.append({"tool_calls": [call.as_openai(calls_sent[i])]})
            calls_sent[i] += 1
        return out

    def pieces(i: int, event: TokenEvent | Progress | Done) -> list[dict[str, Any]]:
        def choice(delta: dict[str, Any], logprobs: Any = None) -> dict[str, Any]:
            return {"index": i, "delta": delta, "logprobs": logprobs, "finish_reason": None}

        if isinstance(event, TokenEvent):
            probs = chat_logprobs(rt, [event], top_n) if req.logprobs else None
            found = deltas(i, event.text, event.reasoning, event.calls) or [{}]
            return [choice(d, probs if k == 0 else None) for k, d in enumerate(found)]
        if isinstance(event, Progress):
            return [choice({})]
        tail = deltas(i, event.finish.tail, event.reasoning_tail, event.tail_calls)
        return [*map(choice, tail), {**choice({}), **finish_of(event)}]

    def start(i: int) -> dict[str, Any]:
        role = {"role": "assistant", "content": None}
        return {"index": i, "delta": role, "logprobs": None, "finish_reason": None}

    events = rt.stream_many(requests)
    if req.stream:
        chunks = stream_chunks(events, requests, req.n, head, start, pieces, req.include_usage)
        return event_stream(chunks)
    choices = await unless_disconnected(request, collect(events, req.n))
    response = whole_response(
        base("chat.completion", rt, "chatcmpl"),
        choices,
        requests,
        req.n,
        lambda c: {
            "message": message(c),
            "logprobs": chat_logprobs(rt, c.tokens, top_n) if req.logprobs else None,
        },
        verbose_info(rt, req, requests[0], choices[0]),
    )
    return response


def message(choice: Answer) -> dict[str, Any]:
    """The assistant message: content, and apart from it the reasoning and the tool calls."""
    content: str | None = choice.content
    calls = choice.calls
    out: dict[str, Any] = {"role": "assistant"}
    reasoning = "".join(choice.reasoning)
    if reasoning:
        out["reasoning_content"] = reasoning
    if calls:
        out["content"] = content if content and content.strip() else None
        out["tool_calls"] = [c.as_openai() for c in calls]
    else:
        out["content"] = content
    return out


@router.post("/v1/chat/completions/input_tokens")
@router.post("/chat/completions/input_tokens")
async def chat_input_tokens(request: Request) -> dict[str, Any]:
    """llama-server's count of the prompt tokens a chat request would use."""
    rt = runtime_of(request)
    req = await parse_body(request, ChatCompletionRequest)
    return {"input_tokens": len(chat_requests(rt, req.model_copy(update={"n": 1}))[0].prompt)}
