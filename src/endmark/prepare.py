"""A `RequestSpec` to the `GenerationRequest`s the scheduler runs: the one place where a
request's defaults and policies are resolved, the same way for every dialect.

Sampling (the request's knob, else the server's default, else the dialect's), the token limit,
`cache_prompt`, drafts, logit bias, stops (one that is a control token ends like EOG), the
prompt (tokens, or the chat template's render), the constraint, tool calls and thinking.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from endmark.adapters import Adapters
from endmark.calls import GENERIC, CallStrategy, Reasoning, ThinkFormat
from endmark.channels import ChannelSplitter
from endmark.chat import Template, TemplateRefused, TemplateRenderError, continue_final
from endmark.chat_tokens import ChatTokenizer
from endmark.constraints import Constraint, ConstraintCompiler, ConstraintSpec
from endmark.drafts import DraftSettings
from endmark.endings import EndPolicy, EogSet
from endmark.engine import Engine
from endmark.generation import GenerationRequest, tokenize_prompt
from endmark.invalid import InvalidRequest
from endmark.sampling import SamplingParams
from endmark.settings import SAMPLING_DEFAULTS, Settings
from endmark.spec import BiasEntry, ChatInput, Prompt, RequestSpec, SamplingSpec
from endmark.tools import ToolRequest

JSON_KINDS = ("json_schema", "json_object")


@dataclass(frozen=True)
class Learned:
    """What loading learned of the model: its end tokens, its chat template (or why it has
    none), and how it writes tool calls and thinking."""

    eog: EogSet
    template: Template | None = None
    template_error: str | None = None
    call_format: CallStrategy | None = None  # how the template writes calls; None: generic
    think_format: ThinkFormat | None = None  # how the model thinks, if it does
    end_text: str = ""  # the template's end-of-turn tag, where no control token writes it


# -- policies: pure functions of the spec and the settings ----------------------------------


def resolve_sampling(
    spec: SamplingSpec, server: Mapping[str, Any], logit_bias: Mapping[int, float]
) -> SamplingParams:
    """Each knob: the request's, else the server's default (`--temp`, `--seed`, ...), else the
    dialect's own."""

    def pick(name: str) -> Any:
        given = getattr(spec, name)
        return given if given is not None else server.get(name, getattr(spec.dialect, name))

    return SamplingParams(
        **{name: pick(name) for name in SAMPLING_DEFAULTS},
        logit_bias=dict(logit_bias),
        n_probs=spec.n_probs,
        logprobs=spec.logprobs,
        post_sampling_probs=spec.post_sampling_probs,
    )


def seeded(sampling: SamplingParams, i: int) -> SamplingParams:
    """Choice i of n gets seed + i, so choices differ but the request stays reproducible."""
    return sampling if sampling.seed < 0 or i == 0 else replace(sampling, seed=sampling.seed + i)


def n_predict(settings: Settings, asked: int) -> int:
    """The request's limit, else the server's `-n` (llama-server's meaning), within the hard
    cap `--n-predict-cap`."""
    n = asked if asked >= 0 else settings.n_predict
    cap = settings.n_predict_cap
    return cap if cap >= 0 and (n < 0 or n > cap) else n


def drafts_for(
    settings: Settings, n_max: int | None = None, n_min: int | None = None
) -> DraftSettings | None:
    """Prompt-lookup drafts as the server is set (`--spec`, `--draft-max`, `--draft-min`),
    or as one request asks (`speculative.n_max`: 0 turns them off)."""
    asked = n_max is not None
    n_max = settings.draft_max if n_max is None else n_max
    if not settings.spec.startswith("ngram") or n_max <= 0:
        return None
    return DraftSettings(n_max, settings.draft_min if n_min is None else n_min, asked=asked)


def drafts_for_sampling(
    drafts: DraftSettings | None, sampling: SamplingParams
) -> DraftSettings | None:
    """Prompt-lookup drafts by default only for greedy decoding. Sampling is exact with
    them too, but a batched decode rounds differently from a one-token one, so a seed
    would no longer give the text it gives without drafts (llama-server's own tests
    expect a seeded request to repeat); a request that sets `speculative.n_max` gets
    them at any temperature."""
    greedy = sampling.temperature <= 0 or sampling.top_k == 1
    return drafts if drafts is None or drafts.asked or greedy else None


# -- the model-dependent part: tokens, template, constraints, calls, thinking ---------------


class Preparer:
    """Turns specs into requests for one loaded model. What loading learned is also kept as
    plain attributes (`template`, `call_format`, ...), which the chat wiring below reads."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        learned: Learned,
        constraints: ConstraintCompiler | None = None,
        adapters: Adapters | None = None,
    ) -> None:
        self.engine = engine
        self.adapters = adapters or Adapters()
        self.settings = settings
        self.learned = learned
        self.eog = learned.eog
        self.template = learned.template
        self.template_error = learned.template_error
        self.call_format = learned.call_format
        self.think_format = learned.think_format
        self.constraints = constraints
        # the messages' text is text; the template's markup alone writes control tokens
        bos = self.template.bos_token if self.template else ""
        parse_special = settings.chat_parse_special
        self.chat_tokens = ChatTokenizer.of(engine.tokenize, engine.vocab, bos, parse_special)

    def __call__(self, spec: RequestSpec) -> list[GenerationRequest]:
        """One request per prompt and choice, in that order."""
        s = self.settings
        bias = self.logit_bias(spec.sampling.logit_bias)
        sampling = resolve_sampling(spec.sampling, s.sampling_defaults(), bias)
        eog, words = self._split_stops(spec.stop)
        if self._ends_as_text(spec) and self.learned.end_text not in words:
            words.append(self.learned.end_text)  # the turn's end, written as text
        limit = n_predict(s, spec.n_predict)
        policy = EndPolicy(eog, tuple(words), limit, spec.ignore_eos, spec.time_limit_ms)
        cache_prompt = s.cache_prompt if spec.cache_prompt is None else spec.cache_prompt
        drafts = drafts_for(s, spec.draft_max, spec.draft_min)
        constraint = spec.constraint
        json_kind = constraint is not None and constraint.kind in JSON_KINDS
        compiled = self._matcher(constraint) if constraint is not None else None  # once: copied
        adapters = self.adapters.resolve(spec.lora)  # its own `lora` list, else the global
        out = []
        for tokens in self._prompt_tokens(spec.input):
            for i in range(spec.n):
                choice = seeded(sampling, i)
                request = GenerationRequest(
                    list(tokens),
                    choice,
                    policy,
                    spec.label,
                    cache_prompt,
                    compiled.copy() if compiled is not None else None,
                    report_progress=spec.report_progress,
                    timings_per_token=spec.timings_per_token,
                    drafts=drafts_for_sampling(drafts, choice),
                    fast_forward=s.fast_forward,
                    close_json=self._json_tokens if json_kind else None,
                    adapters=adapters,
                    n_keep=spec.n_keep,
                    cache_reuse=s.cache_reuse if spec.n_cache_reuse is None else spec.n_cache_reuse,
                )
                if isinstance(spec.input, ChatInput):
                    request = self._chat_wiring(request, spec.input.tools, spec)
                out.append(request)
        return out

    @property
    def n_vocab(self) -> int:
        return self.engine.vocab.n_vocab

    def _prompt_tokens(self, prompts: ChatInput | Sequence[Prompt]) -> list[list[int]]:
        tokenize = self.engine.tokenize
        if not isinstance(prompts, ChatInput):
            return [tokenize_prompt(p, tokenize, self.n_vocab) for p in prompts]
        chat = prompts
        shape = (chat.add_generation_prompt, chat.continue_final_message)

        def render(messages: Sequence[dict[str, Any]], tools: ToolRequest | None) -> str:
            return self.chat_prompt(messages, *shape, tools)

        tokens = self.chat_tokens(render, chat.messages, chat.tools)
        if not tokens:
            raise InvalidRequest("the prompt is empty", "prompt")
        return [tokens]

    def _chat_wiring(
        self, request: GenerationRequest, tools: ToolRequest | None, spec: RequestSpec
    ) -> GenerationRequest:
        """Tool calls and thinking, as the spec asks and the model writes them."""
        s = self.settings
        reasoning = Reasoning(
            s.reasoning_format if spec.reasoning_format is None else spec.reasoning_format,
            s.reasoning_budget if spec.reasoning_budget is None else spec.reasoning_budget,
        )
        if tools is not None and tools.choice != "none":
            self._constrain_calls(request, tools)
        return self._with_thinking(request, reasoning)

    def check_token_ids(self, tokens: Sequence[int], param: str) -> None:
        n = self.n_vocab
        for t in tokens:
            if not 0 <= t < n:
                raise InvalidRequest(f"token id {t} is outside the vocabulary (0..{n - 1})", param)

    def logit_bias(self, entries: Sequence[BiasEntry]) -> dict[int, float]:
        """llama.cpp's forms: a token id or a text (all its tokens), and a bias or `false` (ban)."""
        bias: dict[int, float] = {}
        for key, value in entries:
            if value is True:
                continue
            amount = float("-inf") if value is False else float(value)
            ids = self.engine.tokenize(key, False, False) if isinstance(key, str) else [key]
            self.check_token_ids(ids, "logit_bias")
            for t in ids:
                bias[t] = amount
        return bias

    def token_text(self, token: int) -> str:
        return self.engine.vocab.text(token)

    def _json_tokens(self, text: str) -> list[int]:
        """A closing text as tokens, without a SentencePiece dummy-prefix space."""
        assert self.constraints is not None
        return list(self.constraints.tokenizer.tokenize_str(text))

    def _call_tokens(self, text: str, marker: str) -> list[int]:
        """A call's closing as tokens: its text as llguidance tokenizes it, then its end
        marker as the control token it is (or as text, when it is not one)."""
        ids = self.engine.tokenize(marker, False, True) if marker else []
        if len(ids) == 1 and ids[0] in self.engine.vocab.control:
            return self._json_tokens(text) + ids if text else ids
        return self._json_tokens(text + marker) if text + marker else []

    def _matcher(self, spec: ConstraintSpec) -> Constraint:
        """A checked matcher, its first mask computed: here, not on the decode path."""
        assert self.constraints is not None
        return self.constraints.constraint(spec)

    def _ends_as_text(self, spec: RequestSpec) -> bool:
        """Whether the template's end tag, written as text (`Learned.end_text`), ends this
        request: not one a grammar ends (a schema, a forced call), whose end waits for what
        it must write (thinking, then the call) as an end token's does."""
        tools = getattr(spec.input, "tools", None)
        forced = tools is not None and tools.forced
        return bool(self.learned.end_text) and spec.constraint is None and not forced

    def _split_stops(self, stop: Sequence[str]) -> tuple[EogSet, list[str]]:
        """A stop entry that is exactly one control token ends like an EOG token (rule 1)."""
        control, words = [], []
        for s in stop:
            ids = self.engine.tokenize(s, False, True) if s else []
            if len(ids) == 1 and ids[0] in self.engine.vocab.control:
                control.append(ids[0])
            elif s:
                words.append(s)
        return self.eog.with_stop_tokens(self.engine.vocab, control), words

    # -- chat: the template, tool calls, thinking (moved as they were from runtime.py) ------

    def render_chat(
        self,
        messages: Sequence[dict[str, Any]],
        add_generation_prompt: bool = True,
        continue_final_message: bool | None = None,
        **extra: Any,
    ) -> str:
        """The prompt the model's chat template (or `--chat-template`) makes of `messages`.

        As in llama-server, a last assistant message is continued, not closed (a prefill),
        unless `continue_final_message` is false."""
        if self.template is None:
            raise InvalidRequest(
                self.template_error
                or "this model has no chat template: start endmark with --chat-template NAME|FILE",
                "messages",
            )
        last_is_assistant = bool(messages) and messages[-1].get("role") == "assistant"
        if continue_final_message is None and last_is_assistant:
            if len(messages) >= 2 and messages[-2].get("role") == "assistant":
                raise InvalidRequest(
                    "cannot have 2 or more assistant messages at the end of the list", "messages"
                )
            continue_final_message, add_generation_prompt = True, False
        if continue_final_message and add_generation_prompt:
            raise InvalidRequest(
                "cannot set both add_generation_prompt and continue_final_message to true",
                "continue_final_message",
            )
        if continue_final_message and not last_is_assistant:
            raise InvalidRequest(
                "continue_final_message needs a last assistant message", "messages"
            )
        try:
            if continue_final_message:
                return continue_final(self.template, messages, **extra)
            return self.template.render(messages, add_generation_prompt, **extra)
        except (TemplateRenderError, TemplateRefused) as exc:
            message = f"the chat template refused these messages: {exc}"
            raise InvalidRequest(message, "messages") from None

    def chat_prompt(
        self,
        messages: Sequence[dict[str, Any]],
        add_generation_prompt: bool = True,
        continue_final_message: bool | None = None,
        tools: ToolRequest | None = None,
    ) -> str:
        """The prompt of a chat turn, as `/apply-template` shows it. Tools offered are given to
        a template that knows them; one that does not gets endmark's generic format, described
        in a system message, and the history's calls written in it."""
        shape = (add_generation_prompt, continue_final_message)
        if tools is None or tools.choice == "none":
            return self.render_chat(messages, *shape)
        history, variables = (self.call_format or GENERIC).prompt_inputs(messages, tools)
        return self.render_chat(history, *shape, **variables)

    def _with_thinking(self, request: GenerationRequest, reasoning: Reasoning) -> GenerationRequest:
        """Thinking goes to its own channel (unless `reasoning_format` is none); at the budget,
        its close marker is forced. A constraint (a schema, a forced tool) applies once the
        thinking is over."""
        think = self.think_format
        if think is None or reasoning.format == "none":
            return request
        channels = request.channels
        request.channels = channels.with_think(think) if channels else ChannelSplitter(think=think)
        request.think_close = tuple(self.engine.tokenize(think.end, False, True))
        request.reasoning_budget = reasoning.budget
        return request

    def _constrain_calls(self, request: GenerationRequest, tools: ToolRequest) -> None:
        """A turn that may (`auto`) or must (`required`, a named tool) call tools, in the
        template's own call format or endmark's generic one: a forced call is constrained from
        the first token, an optional one from the moment the model starts it."""
        fmt = self.call_format or GENERIC
        control = {self.token_text(t): t for t in self.engine.vocab.control}
        control |= self._special_in_markers(fmt)
        request.channels = ChannelSplitter(fmt, None, tools.tools, tools.callable, tools.forced)
        request.close_call = self._call_tokens
        if tools.forced:
            grammar = fmt.grammar(tools, control)
            request.constraint = self._matcher(ConstraintSpec("lark", grammar, "tools"))
        else:
            lazy = self._matcher(
                ConstraintSpec("lark", fmt.grammar(tools, control, lazy=True), "tools")
            )
            request.on_call = lambda text: self._call_matcher(lazy, text)

    def _special_in_markers(self, fmt: CallStrategy) -> dict[str, int]:
        """The tokens of a format's markers that llguidance holds special though llama.cpp
        does not call them control (gpt-oss's `<|channel|>`, which llama.cpp renders as
        text): a grammar must write them as the tokens they are."""
        assert self.constraints is not None
        tokenizer = self.constraints.tokenizer
        texts = [*fmt.starts, fmt.end, *fmt.body_tokens]
        ids = {t for text in texts if text for t in self.engine.tokenize(text, False, True)}
        return {self.token_text(t): t for t in ids if tokenizer.is_special_token(t)}

    def _call_matcher(self, lazy: Constraint, text_so_far: str) -> Constraint:
        """The call grammar (compiled at prepare time), past the call's start."""
        assert self.constraints is not None
        return self.constraints.resume(lazy, text_so_far)

    def tool_call_format(self) -> dict[str, Any]:
        """How this model's tool calls are written: learned from its template, or generic."""
        fmt = self.call_format or GENERIC
        return {**fmt.describe(), "learned_from_template": self.call_format is not None}
