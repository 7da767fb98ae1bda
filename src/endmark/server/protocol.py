"""Wire models of the llama.cpp-native dialect: data and validation only.

Models are strict: a number given as a string or a bool given as a number is a 400, not a guess.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from endmark.sampling import SamplingParams


class StrictModel(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


Probability = Annotated[float, Field(ge=0.0, le=1.0)]
LogitBiasEntry = tuple[int | str, float | bool]


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

    def sampling_params(self, logit_bias: dict[int, float]) -> SamplingParams:
        return SamplingParams(
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            min_p=self.min_p,
            repeat_penalty=self.repeat_penalty,
            repeat_last_n=self.repeat_last_n,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            seed=self.seed,
            logit_bias=logit_bias,
            n_probs=self.n_probs,
        )


class CompletionRequest(SamplingFields):
    prompt: str | list[str | int]
    n_predict: Annotated[int, Field(ge=-1)] = -1
    stop: list[str] | str = Field(default_factory=list)
    logit_bias: list[LogitBiasEntry] | dict[str, float | bool] = Field(default_factory=list)
    cache_prompt: bool = True
    return_tokens: bool = False
    stream: bool = False

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v: list[str] | str) -> list[str]:
        return [v] if isinstance(v, str) else v

    def bias_entries(self) -> list[tuple[int | str, float | bool]]:
        """llama.cpp accepts `[[id, bias], ...]`, `[["text", bias]]` and `{"id": bias}`."""
        if isinstance(self.logit_bias, dict):
            out: list[tuple[int | str, float | bool]] = []
            for key, bias in self.logit_bias.items():
                out.append((int(key) if key.lstrip("-").isdigit() else key, bias))
            return out
        return list(self.logit_bias)


class TokenizeRequest(StrictModel):
    content: str
    add_special: bool = False
    parse_special: bool = True
    with_pieces: bool = False


class DetokenizeRequest(StrictModel):
    tokens: list[int]
