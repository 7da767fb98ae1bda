"""A test double of `Engine` that replays scripted answers, so the real scheduler, runtime and
app can be driven without a model: renderer, streaming and parsing tests get exactly the
tokens they ask for.

Each request gets the next answer of the script, in the order requests start decoding (or
`respond(prompt)` picks it). An answer is a text (tokenized with control tokens parsed) or a
list of tokens, each a token id or the text of one token: a word the engine was made with
(`words=`, any pieces of bytes), a base word or a byte. Once it is spent, the model
"writes" its end-of-turn token, `<|im_end|>`.
Each step's logits put all the weight on the answer's next token (or are the rows given), so
greedy and sampled decoding alike replay it. `fail_at=k` raises `DecodeError` at the decode
that asks for step k, as a backend failing mid-stream would.

The vocabulary is tiny and deterministic (`scripted_vocab.py`). The chat template is ChatML
with tools and thinking, as Qwen3's: endmark learns the Hermes call format and `<think>` from
it. llguidance constraints work on it (`lltokenizer`).

A new request is recognised by what the scheduler does when it admits one: a `drop` or
`copy` on the sequence before its first decode. The only drop that is not an admission is
the refused tail of a checked guess (drafts), right after the decode that checked it and
inside the guess; an admission that keeps exactly such a prefix of a sequence whose last
request ended on a fully accepted guess would be taken for one (not a case tests make).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from endmark.engine import ChainSettings, DecodeError, SeqInput
from endmark.sampling import SamplingParams, adjust, make_rng, sample
from tests.scripted_vocab import IM_END, Lexicon, LLVocab, make_vocab

if TYPE_CHECKING:
    from llguidance import LLTokenizer

FLOOR = -100.0  # every token but the scripted one: no sampler ever draws it

CHATML_TOOLS = """\
{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}
    {{- '# Tools\\n\\nYou may call one or more functions. Their signatures, within ' }}
    {{- '<tools></tools>:\\n<tools>' }}
    {%- for tool in tools %}{{- '\\n' + tool | tojson }}{%- endfor %}
    {{- '\\n</tools>\\n\\nFor each call, return a JSON object with the name and arguments ' }}
    {{- 'within <tool_call></tool_call> tags:\\n<tool_call>\\n' }}
    {{- '{"name": <function-name>, "arguments": <args-json-object>}\\n</tool_call><|im_end|>\\n' }}
{%- elif messages[0].role == 'system' %}
    {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}
    {%- elif message.role == 'assistant' %}
        {{- '<|im_start|>assistant\\n' }}
        {%- if message.reasoning_content %}
            {{- '<think>\\n' + message.reasoning_content + '\\n</think>\\n\\n' }}
        {%- endif %}
        {{- message.content or '' }}
        {%- for call in message.tool_calls or [] %}
            {%- set f = call.function or call %}
            {%- if message.content or not loop.first %}{{- '\\n' }}{%- endif %}
            {{- '<tool_call>\\n{"name": "' + f.name + '", "arguments": ' }}
            {{- f.arguments if f.arguments is string else f.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == 'tool' %}
        {{- '<|im_start|>user\\n<tool_response>\\n' + message.content }}
        {{- '\\n</tool_response><|im_end|>\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- endif %}
{%- endif %}"""


# Qwen3's way: the generation prompt opens the thinking (`<think>\n`)
CHATML_TOOLS_OPEN_THINK = CHATML_TOOLS.replace(
    "{{- '<|im_start|>assistant\\n' }}\n    {%- if enable_thinking",
    "{{- '<|im_start|>assistant\\n<think>\\n' }}\n    {%- if enable_thinking",
)
assert CHATML_TOOLS_OPEN_THINK != CHATML_TOOLS


@dataclass(frozen=True)
class Answer:
    """One request's scripted answer: `script` is a text (control tokens parsed) or tokens
    (ids, or each token's text); `logits[k]`, where given, is step k's row instead of the
    one that picks the script's token; `fail_at=k` makes the decode asking for step k fail."""

    script: str | Sequence[int | str | bytes]
    logits: Sequence[np.ndarray] = ()
    fail_at: int | None = None


Script = Answer | str | Sequence[int | str | bytes]


@dataclass
class _Replay:
    """The answer a sequence is replaying, from where its prompt ends."""

    prompt_len: int
    tokens: list[int]
    answer: Answer


@dataclass
class _Sequence:
    cache: list[int] = field(default_factory=list)
    pos_min: int = -1  # the first position still held (-1: none), as llama.cpp reports it
    new: bool = True  # admitted since its last decode: its next logits start an answer
    checked: range | None = None  # the lengths a checked guess's rows were read at
    replay: _Replay | None = None


class ScriptedEngine:
    """The `Engine` protocol, replaying answers; see the module's docstring."""

    def __init__(
        self,
        answers: Iterable[Script] = (),
        *,
        respond: Callable[[list[int]], Script] | None = None,
        n_ctx: int = 4096,
        n_seq_max: int = 4,
        n_batch: int = 512,
        kv_unified: bool = False,
        n_swa: int = 0,
        chat_template: str | None = CHATML_TOOLS,
        n_ctx_train: int = 8192,
        model_path: str = "scripted.gguf",
        words: Iterable[str | bytes] = (),
    ) -> None:
        self._answers = list(answers)
        self._respond = respond
        self.n_ctx = n_ctx
        self.n_ctx_train = n_ctx_train
        self.n_seq_max = n_seq_max
        self.n_batch = n_batch
        self.kv_unified = kv_unified
        self.model_path = model_path
        self.compute_cpu_seconds = 0.0  # no backend compute: all of a step is host work
        self._n_swa = n_swa
        self._template = chat_template
        self.lexicon = Lexicon(words)
        self.vocab = make_vocab(self.lexicon)
        self._seqs = [_Sequence() for _ in range(n_seq_max)]
        self.prompts: list[list[int]] = []  # every request's prompt, in the order it started
        self.decodes: list[list[SeqInput]] = []  # every batch decoded
        self.adapters: tuple[tuple[int, float], ...] = ()  # the LoRA configuration set now
        self.decoded_under: list[tuple[tuple[int, float], ...]] = []  # each decode's, in order
        self._embedder: ScriptedEmbedder | None = None
        self._lock = threading.Lock()

    # -- the script -------------------------------------------------------------------------

    def add(self, *answers: Script) -> None:
        """More answers for the requests to come."""
        with self._lock:
            self._answers += answers

    def _next_answer(self, prompt: list[int]) -> Answer:
        with self._lock:
            if self._respond is not None:
                script = self._respond(prompt)
            elif self._answers:
                script = self._answers.pop(0)
            else:
                raise DecodeError("the scripted engine has no answer left for this request")
        return script if isinstance(script, Answer) else Answer(script)

    def _start(self, seq: _Sequence, prompt: list[int]) -> None:
        answer = self._next_answer(prompt)
        script = answer.script
        if isinstance(script, str):
            tokens = self.tokenize(script, False, True)
        else:
            tokens = [t if isinstance(t, int) else self.lexicon.token(t) for t in script]
        for t in tokens:
            if not 0 <= t < self.vocab.n_vocab:
                raise ValueError(f"scripted token {t} is outside the vocabulary")
        self.prompts.append(prompt)
        seq.replay = _Replay(len(prompt), tokens, answer)
        seq.new = False

    def _row(self, replay: _Replay, length: int) -> np.ndarray:
        """The logits read after the first `length` tokens of the sequence."""
        step = length - replay.prompt_len
        if replay.answer.fail_at is not None and step >= replay.answer.fail_at:
            raise DecodeError(f"scripted failure at step {step}")
        if 0 <= step < len(replay.answer.logits):
            return np.asarray(replay.answer.logits[step], dtype=np.float32)
        row = np.full(self.vocab.n_vocab, FLOOR, dtype=np.float32)
        row[replay.tokens[step] if 0 <= step < len(replay.tokens) else IM_END] = 0.0
        return row

    # -- text and tokens --------------------------------------------------------------------

    def tokenize(self, text: str, add_special: bool, parse_special: bool) -> list[int]:
        """Control tokens (where parsed), then whole words, then bytes; no BOS is added (as
        SmolLM2's vocabulary says)."""
        return self.lexicon.tokenize(text, parse_special)

    def text(self, tokens: Iterable[int]) -> str:
        """Tokens as text, control tokens written out (a prompt, for `respond`)."""
        pieces = self.vocab.special_pieces
        return b"".join(pieces[t] for t in tokens).decode("utf-8", errors="replace")

    def lltokenizer(self, end_tokens: Sequence[int]) -> LLTokenizer:
        import llguidance as lg

        wrapper = lg.TokenizerWrapper(LLVocab(self.vocab, end_tokens, self.lexicon))
        return lg.LLTokenizer(
            wrapper, n_vocab=self.vocab.n_vocab, eos_token=list(end_tokens) or IM_END
        )

    # -- the model's own facts --------------------------------------------------------------

    def metadata(self, key: str) -> str | None:
        meta = {"general.architecture": "scripted", "general.name": "scripted"}
        if self._template is not None:
            meta["tokenizer.chat_template"] = self._template
        return meta.get(key)

    def chat_template(self) -> str | None:
        return self._template

    def builtin_template_names(self) -> list[str]:
        return ["chatml"]

    def apply_builtin_template(
        self, template: str, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool
    ) -> str:
        if template != "chatml" and "<|im_start|>" not in template:
            raise ValueError(f"no built-in chat format for {template[:40]!r}")
        text = "".join(
            f"<|im_start|>{m['role']}\n{m.get('content') or ''}<|im_end|>\n" for m in messages
        )
        return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")

    def model_facts(self) -> dict[str, Any]:
        return {
            "architecture": "scripted",
            "parameters": 0,
            "bytes": 0,
            "quantization": "F32",
            "context_length": self.n_ctx_train,
            "embedding_length": ScriptedEmbedder.n_embd,
            "layers": 1,
            "heads": 1,
        }

    # -- decoding and the cache -------------------------------------------------------------

    def decode(self, inputs: Sequence[SeqInput]) -> dict[int, np.ndarray]:
        """As llama.cpp's: refuses a batch over `n_batch`, positions that do not continue the
        sequence's cache, and a full cache; all before anything changes."""
        total = sum(len(i.tokens) for i in inputs)
        if total == 0:
            return {}
        if total > self.n_batch:
            raise ValueError(f"batch of {total} tokens exceeds n_batch {self.n_batch}")
        self._check(inputs)
        self.decodes.append(list(inputs))
        self.decoded_under.append(self.adapters)
        out: dict[int, np.ndarray] = {}
        for item in inputs:  # the rows first: a scripted failure changes nothing
            if not item.want_logits:
                continue
            seq = self._seqs[item.seq_id]
            end = item.pos + len(item.tokens)
            first = end - item.n_logits + 1  # the length the first row is read at
            if seq.new or seq.replay is None:  # the first logits of a request: its prompt's end
                self._start(seq, (seq.cache + list(item.tokens))[:first])
            assert seq.replay is not None
            rows = [self._row(seq.replay, n) for n in range(first, end + 1)]
            out[item.seq_id] = np.stack(rows)
        for item in inputs:
            seq = self._seqs[item.seq_id]
            seq.cache += item.tokens
            end = len(seq.cache)
            checking = item.want_logits and item.n_logits > 1
            seq.checked = range(end - item.n_logits + 1, end + 1) if checking else None
            seq.pos_min = max(0, end - self._n_swa) if self._n_swa else 0
        return out

    def _check(self, inputs: Sequence[SeqInput]) -> None:
        held = {i: len(s.cache) for i, s in enumerate(self._seqs)}
        for item in inputs:
            if not 0 <= item.seq_id < self.n_seq_max:
                raise DecodeError(f"sequence {item.seq_id} is outside 0..{self.n_seq_max - 1}")
            if item.pos != held[item.seq_id]:
                raise DecodeError(
                    f"sequence {item.seq_id} is fed at {item.pos} but holds {held[item.seq_id]}"
                )
            if any(not 0 <= t < self.vocab.n_vocab for t in item.tokens):
                raise DecodeError(f"sequence {item.seq_id} is fed a token outside the vocabulary")
            held[item.seq_id] += len(item.tokens)
        per_seq = self.n_ctx // self.n_seq_max
        if (
            self.kv_unified
            and sum(held.values()) > self.n_ctx
            or not self.kv_unified
            and any(n > per_seq for n in held.values())
        ):
            raise DecodeError("the context size has been exceeded: the cache is full")

    def sampler_chain(self, settings: ChainSettings) -> Callable[[np.ndarray], int]:
        """numpy's draw behind the chain's call (the same draws a request without a chain
        gets), applying `banned` as a chain does."""
        s = settings
        params = SamplingParams(s.temperature, s.top_k, s.top_p, s.min_p, seed=s.seed)
        rng = make_rng(s.seed)

        def draw(x: np.ndarray) -> int:
            return sample(adjust(x, params, (), s.banned), params, rng).token

        return draw

    def set_adapters(self, config: tuple[tuple[int, float], ...]) -> None:
        self.adapters = config

    def adapter_facts(self) -> list[dict[str, str]]:
        return []

    def drop(self, seq_id: int, from_pos: int = 0) -> None:
        seq = self._seqs[seq_id]
        checked, seq.checked = seq.checked, None
        refused_guess = checked is not None and checked.start <= from_pos < checked.stop - 1
        if not refused_guess:
            seq.new = True
        del seq.cache[max(0, from_pos) :]
        if not seq.cache:
            seq.pos_min = -1

    def copy(self, src: int, dst: int, up_to: int) -> None:
        source, target = self._seqs[src], self._seqs[dst]
        target.cache = source.cache[:up_to]
        target.pos_min = source.pos_min if target.cache else -1
        target.new, target.checked = True, None

    def can_continue(self, seq_id: int, n: int) -> bool:
        if n <= 0:
            return True
        first = self._seqs[seq_id].pos_min
        return 0 <= first <= max(0, n - self._n_swa)

    # No persistent states: a scripted cache is its tokens alone (`prompt_cache` is not used).
    def state_identity(self) -> dict[str, str]:
        return {"engine": "scripted"}

    def state_bytes(self, seq_id: int) -> bytearray:
        raise NotImplementedError("the scripted engine keeps no states")

    def load_state_bytes(self, seq_id: int, data: Any, offset: int = 0, size: int = -1) -> bool:
        return False

    def save_state_file(self, seq_id: int, path: str, tokens: list[int]) -> int:
        return 0

    def load_state_file(self, seq_id: int, path: str) -> tuple[list[int], int]:
        return [], 0

    def can_shift(self) -> bool:
        return True

    def move(self, seq_id: int, src: int, n: int, dst: int) -> None:
        seq = self._seqs[seq_id]
        cache = seq.cache
        seq.cache = cache[:dst] + cache[src : src + n] + cache[src + n :]
        seq.new = True

    def cached(self, seq_id: int) -> list[int]:
        """What a sequence's cache holds (for tests of the scheduler's bookkeeping)."""
        return list(self._seqs[seq_id].cache)

    def embedder(self, pooling: str = "auto") -> ScriptedEmbedder:
        if self._embedder is None:
            self._embedder = ScriptedEmbedder("mean" if pooling == "auto" else pooling)
        return self._embedder

    def close(self) -> None:
        pass


class ScriptedEmbedder:
    """Deterministic vectors: each token's own pseudo-random row, pooled."""

    n_embd = 8
    max_tokens = 512
    rank_head = False  # no reranker: /rerank is refused

    def __init__(self, pooling: str) -> None:
        self.pooling = pooling

    def embed(self, inputs: Sequence[Sequence[int]]) -> list[np.ndarray]:
        for tokens in inputs:
            if not 0 < len(tokens) <= self.max_tokens:
                raise ValueError(
                    f"an input has {len(tokens)} tokens; it must have 1 to {self.max_tokens}"
                )
        return [self._pool(np.stack([self._row(t) for t in tokens])) for tokens in inputs]

    def _row(self, token: int) -> np.ndarray:
        return np.random.default_rng(token).standard_normal(self.n_embd).astype(np.float32)

    def _pool(self, rows: np.ndarray) -> np.ndarray:
        if self.pooling == "none":
            return rows
        if self.pooling == "cls":
            return rows[0]
        if self.pooling == "last":
            return rows[-1]
        return rows.mean(axis=0)
