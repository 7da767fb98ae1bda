"""The engine-neutral request: what every dialect and the CLI turn a request into, and the
prompt as token ids."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from endmark.channels import ChannelSplitter
from endmark.drafts import DraftSettings
from endmark.endings import EndPolicy
from endmark.engine import AdapterScales
from endmark.invalid import InvalidRequest
from endmark.sampling import SamplingParams

if TYPE_CHECKING:
    from endmark.constraints import Constraint


@dataclass
class GenerationRequest:
    """An engine-neutral request: what `prepare` makes of every dialect's spec, and the CLI's."""

    prompt: list[int]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    policy: EndPolicy | None = None
    label: str = "generate"
    cache_prompt: bool = True
    constraint: Constraint | None = None
    report_progress: bool = False  # Progress events while the prompt is evaluated
    timings_per_token: bool = False  # every TokenEvent carries the timings so far
    # Content, reasoning and tool calls told apart (channels.py); and, for calls the model
    # may or may not make, the grammar that takes over once it starts one: given the call's
    # text so far, a constraint that has consumed it.
    channels: ChannelSplitter | None = None
    on_call: Callable[[str], Constraint] | None = None
    # Thinking is closed (these tokens are forced) once it has taken this many tokens.
    reasoning_budget: int = -1
    think_close: tuple[int, ...] = ()
    # prompt-lookup speculation (None: off); forced tokens of a grammar fed without sampling
    drafts: DraftSettings | None = None
    fast_forward: bool = True
    # under a JSON constraint: the tokens of a text (to close the JSON before the limit)
    close_json: Callable[[str], list[int]] | None = None
    # with tools: the tokens of a call's closing text and of its end marker (or its rest)
    close_call: Callable[[str, str], list[int]] | None = None
    # the LoRA configuration it runs under (the base model: none); the scheduler decodes
    # each configuration apart and never continues a cache made under another
    adapters: AdapterScales = ()
    # the completion id `/v1/chat/completions/control` names it by (`reasoning_control`)
    control_id: str | None = None
    # the prompt tokens a context shift keeps (-1: all), and the least chunk that cache reuse
    # moves into place (0: none)
    n_keep: int = 0
    cache_reuse: int = 0


def tokenize_prompt(
    prompt: str | Sequence[str | int], tokenize, n_vocab: int, add_special: bool = True
) -> list[int]:
    """A llama.cpp-style prompt (text, token ids, or a mix of both) as token ids.

    Special tokens written in the text are parsed, as llama-server does; BOS is added only in
    front of a prompt that starts with text.
    """
    parts = [prompt] if isinstance(prompt, str) else list(prompt)
    tokens: list[int] = []
    for i, part in enumerate(parts):
        if isinstance(part, str):
            tokens.extend(tokenize(part, add_special and i == 0, True))
        else:
            if not 0 <= part < n_vocab:
                raise InvalidRequest(
                    f"token id {part} is outside the vocabulary (0..{n_vocab - 1})", "prompt"
                )
            tokens.append(int(part))
    if not tokens:
        raise InvalidRequest("the prompt is empty", "prompt")
    return tokens
