"""Grammar, JSON Schema and JSON mode on both APIs: output that always parses and ends on time."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from tests.conftest import MARKERS, RunningServer


def obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": props,
        "required": list(props) if required is None else required,
        "additionalProperties": False,
    }


NAME = {"type": "string", "maxLength": 16}
SCHEMAS: list[tuple[str, dict[str, Any]]] = [
    ("a person", obj({"name": NAME, "age": {"type": "integer", "minimum": 0, "maximum": 120}})),
    ("a person and their address", obj({"name": NAME, "address": obj({"city": NAME, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}})})),
    ("two to four fruits", {"type": "array", "items": NAME, "minItems": 2, "maxItems": 4}),
    ("a color", obj({"color": {"enum": ["red", "green", "blue"]}})),
    ("a probability", obj({"p": {"type": "number", "minimum": 0, "maximum": 1}})),
    ("a book, subtitle optional", obj({"title": NAME, "subtitle": NAME}, required=["title"])),
    ("a flight code", obj({"code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{3}$"}})),
    ("a value", obj({"value": {"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 8}]}})),
    ("a yes/no flag", obj({"done": {"type": "boolean"}})),
    ("one to three points", {"type": "array", "minItems": 1, "maxItems": 3, "items": obj({"x": {"type": "integer"}, "y": {"type": "integer"}})}),
    ("a size", obj({"size": {"enum": [1, 2, 3, "large"]}})),
    ("a 2x2 matrix", {"type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "integer", "minimum": -9, "maximum": 9}}}),
    ("a note or null", obj({"note": {"anyOf": [NAME, {"type": "null"}]}})),
    ("a positive count", obj({"count": {"type": "integer", "exclusiveMinimum": 0, "maximum": 1000}})),
    ("a product", obj({"sku": {"type": "string", "pattern": "^[a-z]{2}[0-9]{2}$"}, "price": {"type": "number", "minimum": 0, "maximum": 999}, "stock": {"type": "integer", "minimum": 0, "maximum": 99}, "active": {"type": "boolean"}})),
    ("up to three tags", obj({"tags": {"type": "array", "maxItems": 3, "items": {"enum": ["a", "b", "c"]}}})),
    ("a date", obj({"date": {"type": "string", "pattern": "^20[0-9]{2}-[01][0-9]-[0-3][0-9]$"}})),
    ("a nested value", obj({"a": obj({"b": obj({"c": {"type": "integer", "minimum": 0, "maximum": 9}})})})),
    ("three small numbers", {"type": "array", "minItems": 3, "maxItems": 3, "items": {"type": "number", "minimum": -10, "maximum": 10}}),
    ("a pet", {"anyOf": [obj({"kind": {"const": "cat"}, "lives": {"type": "integer", "minimum": 1, "maximum": 9}}), obj({"kind": {"const": "dog"}, "good": {"type": "boolean"}})]}),
]  # fmt: skip
# Issue 4's five seeds with ENDMARK_FULL_MATRIX=1; the suite asks three.
SEEDS = [1, 2, 3, 4, 5] if os.environ.get("ENDMARK_FULL_MATRIX") == "1" else [1, 2, 3]


@pytest.fixture()
def sdk(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def assert_no_control_text(text: str) -> None:
    for marker in MARKERS:
        assert marker not in text


def test_twenty_schemas_five_seeds_always_parse_and_validate(sdk: openai.OpenAI) -> None:
    def run(case: tuple[int, int]) -> tuple[str, dict[str, Any], str, str]:
        (what, schema), seed = SCHEMAS[case[0]], case[1]
        r = sdk.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": f"Give me {what} as JSON."}],
            temperature=0.8,
            seed=seed,
            max_tokens=200,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": schema, "strict": True},
            },
        )
        return what, schema, r.choices[0].message.content or "", r.choices[0].finish_reason

    cases = [(i, s) for i in range(len(SCHEMAS)) for s in SEEDS]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, cases))
    assert len(results) == len(SCHEMAS) * len(SEEDS) == 20 * len(SEEDS)
    for _what, schema, text, _finish in results:
        assert_no_control_text(text)
        jsonschema.validate(json.loads(text), schema)  # issue 15: every one, none cut


def native(server: RunningServer, body: dict[str, Any]) -> dict[str, Any]:
    return httpx.post(f"{server.url}/completion", json=body, timeout=120).json()  # type: ignore[no-any-return]


def test_gbnf_empty_object_is_exactly_that(server: RunningServer) -> None:
    prompt = "<|im_start|>user\nReply with an empty JSON object.<|im_end|>\n<|im_start|>assistant\n"
    r = native(server, {"prompt": prompt, "grammar": 'root ::= "{}"', "n_predict": 16})
    assert r["content"] == "{}"
    assert r["stop_type"] == "eos" and r["grammar_complete"] is True
    assert r["stopping_token"] is None and r["tokens_predicted"] == 1


def test_gbnf_choice_on_both_apis(server: RunningServer, sdk: openai.OpenAI) -> None:
    grammar = 'root ::= "yes" | "no"'
    for seed in range(4):
        r = native(
            server,
            {"prompt": "Is the sky blue?", "grammar": grammar, "temperature": 1, "seed": seed},
        )
        assert r["content"] in ("yes", "no") and r["grammar_complete"]
        chat = sdk.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "Is the sky blue?"}],
            seed=seed,
            extra_body={"grammar": grammar},
        )
        assert chat.choices[0].message.content in ("yes", "no")
        assert chat.choices[0].finish_reason == "stop"
        assert chat.model_extra["endmark"]["grammar_complete"] is True  # type: ignore[index]


def test_json_object_mode_through_the_sdk(sdk: openai.OpenAI) -> None:
    r = sdk.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "Describe a cat in JSON, with its name and age."}],
        response_format={"type": "json_object"},
        max_tokens=200,
        temperature=0,
    )
    text = r.choices[0].message.content or ""
    assert r.choices[0].finish_reason == "stop", text
    assert isinstance(json.loads(text), dict)
    assert_no_control_text(text)


def test_v1_completions_take_a_json_schema(sdk: openai.OpenAI) -> None:
    schema = obj({"answer": {"type": "integer", "minimum": 0, "maximum": 10}})
    r = sdk.completions.create(
        model="m",
        prompt="2+2 in JSON:",
        max_tokens=32,
        extra_body={"json_schema": schema},
        temperature=0,
    )
    jsonschema.validate(json.loads(r.choices[0].text), schema)
    assert r.choices[0].finish_reason == "stop"


def test_a_cut_output_says_limit_never_complete_and_its_json_is_closed(
    server: RunningServer,
) -> None:
    schema = {"type": "array", "items": {"type": "integer"}, "minItems": 50}
    r = native(server, {"prompt": "Numbers:", "json_schema": schema, "n_predict": 10})
    assert r["stop_type"] == "limit" and r["grammar_complete"] is False
    assert r["truncated_json_closed"] is True and r["tokens_predicted"] <= 10
    assert isinstance(json.loads(r["content"]), list)  # parses, though 50 items were asked


SIX = {"type": "array", "minItems": 6, "maxItems": 6, "items": obj({
    "name": NAME, "city": NAME, "age": {"type": "integer", "minimum": 0, "maximum": 120},
    "email": {"type": "string", "maxLength": 32}})}  # fmt: skip


def test_too_small_a_budget_still_gives_json_that_parses(sdk: openai.OpenAI) -> None:
    """Issue 15: six records in 24 tokens cannot fit; each answer is closed as the budget
    runs out, so it parses (and says `length`); how many also validate is printed."""
    valid = 0
    for seed in range(10):
        r = sdk.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "Six people as JSON."}],
            temperature=0.8, seed=seed, max_tokens=24,
            response_format={"type": "json_schema",
                             "json_schema": {"name": "people", "schema": SIX}},
        )  # fmt: skip
        choice = r.choices[0]
        data = json.loads(choice.message.content or "")
        assert choice.finish_reason == "length"
        assert choice.model_extra["endmark"]["truncated_json_closed"] is True  # type: ignore[index]
        valid += jsonschema.Draft202012Validator(SIX).is_valid(data)
    print(f"cut to 24 tokens: 10 of 10 parse, {valid} of 10 validate")


def test_streaming_under_a_grammar_matches_plain(server: RunningServer) -> None:
    schema = SCHEMAS[0][1]
    body = {
        "prompt": "<|im_start|>user\nA person as JSON<|im_end|>\n<|im_start|>assistant\n",
        "json_schema": schema,
        "temperature": 0.8,
        "seed": 42,
        "n_predict": 100,
        "cache_prompt": False,  # both evaluated whole: a cached prefix is other numerics
    }
    plain = native(server, body)
    chunks = []
    with httpx.stream("POST", f"{server.url}/completion", json={**body, "stream": True}) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                chunks.append(json.loads(line[6:]))
    assert "".join(c["content"] for c in chunks) == plain["content"]
    assert chunks[-1]["grammar_complete"] == plain["grammar_complete"] is True
    jsonschema.validate(json.loads(plain["content"]), schema)


@pytest.mark.parametrize(
    "body,field,needle",
    [
        ({"grammar": 'root ::= "a'}, "grammar", "Failed to convert"),
        ({"grammar": "root ::= undefined_rule"}, "grammar", "undefined_rule"),
        ({"json_schema": {"type": "nonsense"}}, "json_schema", "nonsense"),
        ({"json_schema": {"type": "object", "if": {}}}, "json_schema", "Unimplemented keys"),
        ({"json_schema": {"type": "object"}, "grammar": 'root ::= "a"'}, None, "only one"),
    ],
)
def test_bad_constraints_are_400s_naming_the_problem(
    server: RunningServer, sdk: openai.OpenAI, body: dict[str, Any], field: str, needle: str
) -> None:
    r = httpx.post(f"{server.url}/completion", json={"prompt": "x", **body}, timeout=60)
    assert r.status_code == 400 and needle in r.json()["error"]["message"]
    with pytest.raises(openai.BadRequestError) as info:
        sdk.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}], extra_body=body
        )
    assert needle in info.value.body["message"]  # type: ignore[index]
    if field:
        assert info.value.body["param"] == field  # type: ignore[index]
    bad_format = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"if": {}}}}
    with pytest.raises(openai.BadRequestError, match="Unimplemented keys"):
        sdk.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "x"}],
            response_format=bad_format,  # type: ignore[arg-type]
        )


def test_logprobs_under_a_grammar_are_valid_json(server: RunningServer) -> None:
    # One token is allowed, so four of the five alternatives would be -inf, not valid JSON.
    body = {"prompt": "Empty object:", "grammar": 'root ::= "{}"', "n_probs": 5}
    r = httpx.post(f"{server.url}/completion", json=body, timeout=60)
    assert r.status_code == 200
    (p,) = r.json()["completion_probabilities"]
    assert [t["token"] for t in p["top_logprobs"]] == ["{}"]
    assert p["logprob"] == 0.0
