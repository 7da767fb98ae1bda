"""Calls that always parse (issue 29): under `tool_choice: "required"`, every answer carries a
call whose arguments parse, and validate or say why not (`endmark.tool_call_errors`); an
answer the limit cut says `length` and `truncated_json_closed`. On the bundled model (endmark's
generic format), and SmolLM2 variants with a Hermes template and with an end-of-turn marker no
list knows. And a call written inside thinking, on the open-`<think>` model, is reasoning.

The suite runs a small matrix (2 prompts x 3 seeds at max_tokens 160 and 4 x 3 at 40 on the
bundled model, 2 x 3 at 40 on each variant); `ENDMARK_FULL_MATRIX=1` runs the issue's full one
(20 x 3 at both limits, on all three models) and prints the counts."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from tests.conftest import RunningServer, start_server, stop_server
from tests.e2e.test_tools import PROMPTS, SCHEMAS, TOOLS
from tests.gguf_factory import FAMILIES, build_gguf, build_smollm2_variant

FULL = os.environ.get("ENDMARK_FULL_MATRIX") == "1"


def sdk(srv: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{srv.url}/v1", api_key="none", max_retries=0, timeout=600)


def forced(srv: RunningServer, prompts: int, limit: int) -> Counter[str]:
    """Every answer of `prompts` x 3 seeds checked, four at a time; the counts of what came."""
    client = sdk(srv)

    def one(job: tuple[str, int]) -> Counter[str]:
        prompt, seed = job
        r = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": prompt}], tools=TOOLS,
            tool_choice="required", temperature=0.8, seed=seed, max_tokens=limit,
        )  # type: ignore[call-overload]  # fmt: skip
        choice = r.choices[0].model_dump()
        detail, calls = choice["endmark"], choice["message"]["tool_calls"]
        assert calls and not choice["message"]["content"], choice
        errors = {e["id"]: e["error"] for e in detail.get("tool_call_errors", [])}
        seen = Counter(answers=1, calls=len(calls))
        for call in calls:
            args = json.loads(call["function"]["arguments"])  # every call parses
            try:
                jsonschema.validate(args, SCHEMAS[call["function"]["name"]])
                seen["valid"] += 1
            except jsonschema.ValidationError:
                assert call["id"] in errors, (choice, errors)  # said, never silent
                seen["said_invalid"] += 1
        if choice["finish_reason"] == "length":
            seen["cut"] += 1
            seen["closed"] += detail["truncated_json_closed"]
            # cut between whole calls, there was nothing to close
            assert detail["truncated_json_closed"] or not errors, choice
        else:
            assert choice["finish_reason"] == "tool_calls" and not errors, choice
        seen["all_valid"] += not errors
        return seen

    jobs = [(p, seed) for p in PROMPTS[:prompts] for seed in range(3)]
    with ThreadPoolExecutor(4) as pool:
        counts = sum(pool.map(one, jobs), Counter())
    if FULL:
        print(f"\n{srv.url} max_tokens={limit}: {dict(counts)}")
    return counts


@pytest.mark.parametrize(("limit", "prompts"), [(160, 2), (40, 4)])
def test_forced_calls_parse_on_the_bundled_model(
    server: RunningServer, limit: int, prompts: int
) -> None:
    counts = forced(server, 20 if FULL else prompts, limit)
    assert counts["answers"] == counts["all_valid"] == 3 * (20 if FULL else prompts), counts


@pytest.fixture(scope="module", params=["hermes", "unknown_tools"])
def variant(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """SmolLM2 with Qwen2.5's Hermes tool template, or with markers and an end-of-turn token
    (`<|over_to_you|>`) that no list knows, as control tokens. (The tiny random models of
    `gguf_factory` cannot: their vocabulary is bytes, and the shortest valid call is ~45 of
    them; there every cut answer is a closed call with its error said, `test_cut_calls.py`.)"""
    folder = tmp_path_factory.mktemp(request.param)
    path = build_smollm2_variant(folder / "m.gguf", FAMILIES[request.param])
    srv = start_server(folder, "-m", str(path), "-np", "4")
    yield srv
    stop_server(srv)


def test_forced_calls_parse_and_validate_on_the_variants(variant: RunningServer) -> None:
    for limit in [160, 40] if FULL else [40]:
        counts = forced(variant, 20 if FULL else 2, limit)
        # every call valid: another call begins only with room for whichever tool it names
        assert counts["answers"] == counts["all_valid"] == (60 if FULL else 6), counts


@pytest.fixture(scope="module")
def thinker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Qwen3's open `<think>`, with `<tool_call>` and `</tool_call>` as control tokens (the
    template knows no tools: endmark's generic format, whose markers these are)."""
    folder = tmp_path_factory.mktemp("qwen3")
    qwen3 = FAMILIES["qwen3"]
    family = replace(qwen3, specials=(*qwen3.specials, "<tool_call>", "</tool_call>"))
    model = str(build_gguf(folder / "q.gguf", family))
    srv = start_server(folder, "-m", model, "-c", "4096", "-np", "2")
    yield srv
    stop_server(srv)


def test_a_call_inside_thinking_is_reasoning(thinker: RunningServer) -> None:
    """The model writes the call marker again and again (a logit bias) inside the thinking
    the prompt opened: it is thought, not a call, under `auto`. Under `required`, 12 tokens
    leave no room to think before the call: the thinking closes at once, the call begins,
    and the limit cuts it; endmark closes it and says so."""
    start = httpx.post(f"{thinker.url}/tokenize", json={"content": "<tool_call>",
                       "parse_special": True}, timeout=30).json()["tokens"]  # fmt: skip
    assert len(start) == 1
    client = sdk(thinker)
    for choice in ("auto", "required"):
        r = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "Hi"}], tools=TOOLS, max_tokens=12,
            temperature=0, logit_bias={str(start[0]): 30}, tool_choice=choice,
        )  # type: ignore[call-overload]  # fmt: skip
        answer = r.choices[0].model_dump()
        assert answer["finish_reason"] == "length" and not answer["message"]["content"]
        calls = answer["message"]["tool_calls"] or []
        errors = answer["endmark"].get("tool_call_errors", [])
        assert len(calls) == (choice == "required"), answer
        assert [e["id"] for e in errors] == [c["id"] for c in calls], answer
        assert choice == "auto" or answer["endmark"]["truncated_json_closed"], answer


def test_required_thinks_then_calls(thinker: RunningServer) -> None:
    """Issue 24, failure 4: the prompt ends inside `<think>`, and the model soon wants to end
    the turn (a bias on its end token). Under `required` that end closes the thinking, and
    the model writes its own call (not one endmark wrote for a turn that ended without):
    for 2 seeds, a call, no content, and a finish that says whether the call came whole."""
    end = httpx.post(f"{thinker.url}/tokenize", json={"content": "<|im_end|>",
                     "parse_special": True}, timeout=30).json()["tokens"]  # fmt: skip
    client = sdk(thinker)

    def one(seed: int) -> dict[str, Any]:
        r = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "Weather in Paris?"}], tools=TOOLS,
            tool_choice="required", temperature=0.8, seed=seed, max_tokens=40,
            logit_bias={str(end[0]): 3},
        )  # type: ignore[call-overload]  # fmt: skip
        return r.choices[0].model_dump()

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(one, (1, 2)))
    for answer in answers:
        message, detail = answer["message"], answer["endmark"]
        assert message["tool_calls"] and not message["content"], answer
        errors = [e["error"] for e in detail.get("tool_call_errors", [])]
        assert not any("before the model began" in e for e in errors), answer  # the model's
        if answer["finish_reason"] == "length":  # cut: closed, or between whole calls
            assert detail["truncated_json_closed"] or not errors, answer
        else:
            assert answer["finish_reason"] == "tool_calls" and not errors, answer
