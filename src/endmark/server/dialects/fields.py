"""Request fields every dialect's wire models share: strictness, limits, sampling knobs,
constraints. Data and validation only; each dialect's own models are in `*_protocol.py`.

Models are strict: a number given as a string or a bool given as a number is a 400, not a guess.
A number out of its knob's range is a 400 too (NaN and infinities are, everywhere), except
where llama-server clamps and the clamp is harmless: `top_k` beyond the vocabulary means all
of it, and a token limit, `repeat_last_n`, a time limit or a reasoning budget beyond what the
context allows means no limit but the context's.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from endmark.constraints import ConstraintSpec
from endmark.sampling import SamplingParams
from endmark.settings import SAMPLING_DEFAULTS
from endmark.spec import SamplingSpec


class StrictModel(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False)


# Limits on what one request may ask for; beyond them, a 400 that names the field.
MAX_STOPS = 16
MAX_STOP_CHARS = 500
MAX_CONSTRAINT_CHARS = 64 * 1024

StopWords = Annotated[
    list[Annotated[str, Field(max_length=MAX_STOP_CHARS)]], Field(max_length=MAX_STOPS)
]
GrammarText = Annotated[str, Field(max_length=MAX_CONSTRAINT_CHARS)]
TimeLimitMs = Annotated[int, Field(ge=0)]


def check_schema_size(v: dict[str, Any] | None) -> dict[str, Any] | None:
    if v is not None and len(json.dumps(v)) > MAX_CONSTRAINT_CHARS:
        raise ValueError(f"the schema is larger than {MAX_CONSTRAINT_CHARS} characters")
    return v


def sampling_spec(
    fields: BaseModel, dialect: SamplingParams | None = None, **extra: Any
) -> SamplingSpec:
    """The sampling knobs a request set, from any dialect's model (they share the knobs'
    names). The dialect's own default of each knob is its model's field default, over
    `dialect` for knobs the model does not have; `prepare` picks between them and the
    server's defaults."""
    given = fields.model_fields_set
    declared = type(fields).model_fields
    own = {k: declared[k].default for k in SAMPLING_DEFAULTS if k in declared}
    own = {k: v for k, v in own.items() if v is not None}  # OpenAI's seed: none given
    knobs = {k: getattr(fields, k) for k in SAMPLING_DEFAULTS if k in given and k in declared}
    return SamplingSpec(
        **knobs,
        dialect=replace(dialect or SamplingParams(), **own),
        post_sampling_probs=bool(getattr(fields, "post_sampling_probs", False)),
        **extra,
    )


def pick_constraint(
    grammar: str | None = None,
    json_schema: dict[str, Any] | None = None,
    response_format: ResponseFormat | None = None,
) -> ConstraintSpec | None:
    """At most one constraint per request; asking for two is an error, not a silent pick."""
    specs = []
    if grammar is not None:
        specs.append(ConstraintSpec("grammar", grammar, "grammar"))
    if json_schema is not None:
        specs.append(ConstraintSpec("json_schema", json_schema, "json_schema"))
    if response_format is not None and response_format.type != "text":
        specs.append(response_format.spec())
    if len(specs) > 1:
        fields = ", ".join(s.field for s in specs)
        raise ValueError(f"give only one constraint, not {fields}")
    return specs[0] if specs else None


class JsonSchemaFormat(StrictModel):
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None

    _size = field_validator("schema_")(check_schema_size)
    description: str | None = None


class ResponseFormat(StrictModel):
    type: Literal["text", "json_object", "json_schema"]
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    json_schema: JsonSchemaFormat | None = None

    _size = field_validator("schema_")(check_schema_size)

    def spec(self) -> ConstraintSpec:
        if self.type == "json_schema":
            if self.json_schema is None or self.json_schema.schema_ is None:
                raise ValueError("response_format json_schema needs json_schema.schema")
            return ConstraintSpec("json_schema", self.json_schema.schema_, "response_format")
        return ConstraintSpec("json_object", self.schema_, "response_format")


Probability = Annotated[float, Field(ge=0.0, le=1.0)]
# `[id or text, bias or false]`; JSON has no tuples, so a two-item list checked below
LogitBiasEntry = Annotated[list[int | str | float | bool], Field(min_length=2, max_length=2)]


class DraftFields(StrictModel):
    """llama-server's per-request speculation knobs (`speculative.n_max: 0` turns it off)."""

    speculative_n_max: Annotated[int, Field(ge=0)] | None = Field(None, alias="speculative.n_max")
    speculative_n_min: Annotated[int, Field(ge=0)] | None = Field(None, alias="speculative.n_min")


class LoraScale(StrictModel):
    """One entry of a `lora` list (llama-server's): an adapter's id and its scale."""

    id: int
    scale: float


class LoraFields(StrictModel):
    """llama-server's per-request `lora` list: the adapters this request runs with (those
    it leaves out at 0); without one, the server's global scales (`POST /lora-adapters`)."""

    lora: list[LoraScale] | None = None

    def lora_scales(self) -> tuple[tuple[int, float], ...] | None:
        return None if self.lora is None else tuple((e.id, e.scale) for e in self.lora)


class SamplingFields(StrictModel):
    """Sampling knobs shared by every generation endpoint (llama.cpp names and defaults)."""

    temperature: Annotated[float, Field(ge=0.0, le=100.0)] = 0.8
    top_k: Annotated[int, Field(ge=0)] = 40
    top_p: Probability = 0.95
    min_p: Probability = 0.05
    repeat_penalty: Annotated[float, Field(gt=0.0, le=100.0)] = 1.0
    repeat_last_n: Annotated[int, Field(ge=-1)] = 64
    presence_penalty: Annotated[float, Field(ge=-100.0, le=100.0)] = 0.0
    frequency_penalty: Annotated[float, Field(ge=-100.0, le=100.0)] = 0.0
    seed: int = -1
    n_probs: Annotated[int, Field(ge=0, le=100)] = 0
    ignore_eos: bool = False
    post_sampling_probs: bool = False
