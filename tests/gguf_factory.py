"""Tiny GGUF models for tests, made with the `gguf` package: random weights, a real vocab.

Each one is a 2-layer llama with an SPM vocabulary (bytes, a few words, and the control tokens
of one chat-template family), so llama.cpp loads, tokenizes and decodes it like a real model.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

NORMAL, UNKNOWN, CONTROL, BYTE = 1, 2, 3, 6
TEMPLATES = Path(__file__).parent / "data" / "templates"  # real templates, from llama.cpp
# "▁" alone, as every real SentencePiece vocabulary has it: a space is then one token
WORDS = ["▁", "▁hello", "▁world", "▁the", "▁a", "▁is", "▁answer", "▁user", "▁assistant", "▁system"]


@dataclass(frozen=True)
class Family:
    """One chat style: its control tokens, which are eos/eot, its template, and its marker."""

    name: str
    specials: tuple[str, ...]
    template: str
    marker: str
    eos: str = "</s>"
    eot: str | None = None


FAMILIES = {
    "llama3": Family(
        "llama3",
        ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
        "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}"
        "<|end_header_id|>\n\n{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n"
        "{% endif %}",
        "<|eot_id|>",
        eos="<|end_of_text|>",
    ),
    "mistral": Family(
        "mistral",
        ("[INST]", "[/INST]"),
        "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] "
        "{{ m['content'] }} [/INST]{% else %}{{ m['content'] }}{{ eos_token }}{% endif %}"
        "{% endfor %}",
        "</s>",
    ),
    "phi3": Family(
        "phi3",
        ("<|user|>", "<|assistant|>", "<|end|>", "<|system|>"),
        "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}",
        "<|end|>",
        eos="<|endoftext|>",
    ),
    # Qwen2.5's way with tools (Hermes): the tools in the system turn, calls in <tool_call>
    "hermes": Family(
        "hermes",
        ("<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>"),
        "{% if tools %}<|im_start|>system\nYou may call functions.\n<tools>"
        "{% for t in tools %}\n{{ t | tojson }}{% endfor %}\n</tools><|im_end|>\n{% endif %}"
        "{% for m in messages %}"
        "{% if m['role'] == 'assistant' and m.get('tool_calls') %}<|im_start|>assistant\n"
        "{{ m['content'] or '' }}{% for c in m['tool_calls'] %}<tool_call>\n"
        '{"name": "{{ c.function.name }}", "arguments": {{ c.function.arguments | tojson }}}'
        "\n</tool_call>{% endfor %}<|im_end|>\n"
        "{% elif m['role'] == 'tool' %}<|im_start|>user\n<tool_response>\n{{ m['content'] }}"
        "\n</tool_response><|im_end|>\n"
        "{% else %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
        "<|im_end|>",
    ),
    # a tool marker no list knows: endmark must learn it from the template
    "unknown_tools": Family(
        "unknown_tools",
        ("<|speaker:user|>", "<|speaker:bot|>", "<|over_to_you|>", "<|fn_call|>", "<|/fn_call|>"),
        "{% if tools %}<|speaker:user|>tools: {{ tools | tojson }}<|over_to_you|>{% endif %}"
        "{% for m in messages %}{% if m['role'] == 'user' %}<|speaker:user|>"
        "{% else %}<|speaker:bot|>{% endif %}{{ m['content'] or '' }}"
        "{% for c in m.get('tool_calls') or [] %}<|fn_call|>"
        '{"name": "{{ c.function.name }}", "arguments": {{ c.function.arguments | tojson }}}'
        "<|/fn_call|>{% endfor %}<|over_to_you|>{% endfor %}"
        "{% if add_generation_prompt %}<|speaker:bot|>{% endif %}",
        "<|over_to_you|>",
    ),
    # Llama 3.1's way with tools, condensed from its template: the tools in the first user
    # turn, a call as bare JSON with "parameters", one call a turn, results as `ipython`
    "llama3_tools": Family(
        "llama3_tools",
        (
            "<|begin_of_text|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|eot_id|>",
            "<|eom_id|>",
            "<|python_tag|>",
        ),
        "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
        "{% set system_message = messages[0]['content'] | trim %}{% set messages = messages[1:] %}"
        "{% else %}{% set system_message = '' %}{% endif %}"
        "<|start_header_id|>system<|end_header_id|>\n\n{% if tools %}Environment: ipython\n"
        "{% endif %}{{ system_message }}<|eot_id|>"
        "{% if tools %}{% set first = messages[0]['content'] | trim %}"
        "{% set messages = messages[1:] %}<|start_header_id|>user<|end_header_id|>\n\n"
        "Given the following functions, please respond with a JSON for a function call.\n\n"
        'Respond in the format {"name": function name, "parameters": dictionary of argument '
        "name and its value}.\n\n{% for t in tools %}{{ t | tojson(indent=4) }}\n\n"
        "{% endfor %}{{ first }}<|eot_id|>{% endif %}"
        "{% for m in messages %}"
        "{% if not (m.role == 'ipython' or m.role == 'tool' or 'tool_calls' in m) %}"
        "<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] | trim }}"
        "<|eot_id|>{% elif 'tool_calls' in m %}{% if m.tool_calls | length != 1 %}"
        "{{ raise_exception('This model only supports single tool-calls at once!') }}{% endif %}"
        "{% set c = m.tool_calls[0].function %}<|start_header_id|>assistant<|end_header_id|>"
        '\n\n{"name": "{{ c.name }}", "parameters": {{ c.arguments | tojson }}}<|eot_id|>'
        "{% else %}<|start_header_id|>ipython<|end_header_id|>\n\n{{ m.content }}<|eot_id|>"
        "{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n"
        "{% endif %}",
        "<|eot_id|>",
        eos="<|end_of_text|>",
    ),  # fmt: skip
    # Mistral Nemo's way, condensed: [AVAILABLE_TOOLS] before the last user turn, calls as
    # one [TOOL_CALLS] array, and ids of exactly 9 letters and digits (the template checks)
    "mistral_tools": Family(
        "mistral_tools",
        (
            "[INST]",
            "[/INST]",
            "[TOOL_CALLS]",
            "[AVAILABLE_TOOLS]",
            "[/AVAILABLE_TOOLS]",
            "[TOOL_RESULTS]",
            "[/TOOL_RESULTS]",
        ),
        "{{ bos_token }}{% set users = messages | selectattr('role', 'equalto', 'user') | list %}"
        "{% for m in messages %}{% if m['role'] == 'user' %}"
        "{% if tools and m == users[-1] %}[AVAILABLE_TOOLS]{{ tools | tojson }}"
        "[/AVAILABLE_TOOLS]{% endif %}[INST]{{ m['content'] }}[/INST]"
        "{% elif m.tool_calls is defined and m.tool_calls %}[TOOL_CALLS]["
        "{% for c in m.tool_calls %}{% if c.id | length != 9 %}"
        "{{ raise_exception('Tool call IDs should be alphanumeric strings with length 9!') }}"
        '{% endif %}{{ (c.function | tojson)[:-1] }}, "id": "{{ c.id }}"}'
        "{% if not loop.last %}, {% endif %}{% endfor %}]{{ eos_token }}"
        "{% elif m['role'] == 'assistant' %}{{ m['content'] }}{{ eos_token }}"
        "{% elif m['role'] == 'tool' %}[TOOL_RESULTS]{\"content\": {{ m.content }}, "
        '"call_id": "{{ m.tool_call_id }}"}[/TOOL_RESULTS]{% endif %}{% endfor %}',
        "</s>",
    ),  # fmt: skip
    # Qwen3's way of thinking: the generation prompt opens <think>
    "qwen3": Family(
        "qwen3",
        ("<|im_start|>", "<|im_end|>", "<think>", "</think>"),
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}",
        "<|im_end|>",
    ),
    # Qwen3-Coder's own template: calls with tagged arguments, `<function=NAME>` and
    # `<parameter=KEY>` inside `<tool_call>`, values as text or JSON
    "qwen3_coder": Family(
        "qwen3_coder",
        (
            "<|im_start|>",
            "<|im_end|>",
            "<tool_call>",
            "</tool_call>",
            "<tool_response>",
            "</tool_response>",
        ),
        (TEMPLATES / "Qwen3-Coder.jinja").read_text(encoding="utf-8"),
        "<|im_end|>",
    ),  # fmt: skip
    "unknown": Family(
        "unknown",
        ("<|speaker:user|>", "<|speaker:bot|>", "<|over_to_you|>"),
        "{% for m in messages %}{% if m['role'] == 'user' %}<|speaker:user|>"
        "{% else %}<|speaker:bot|>{% endif %}{{ m['content'] }}<|over_to_you|>{% endfor %}"
        "{% if add_generation_prompt %}<|speaker:bot|>{% endif %}",
        "<|over_to_you|>",
    ),
}


def build_gguf(
    path: Path,
    family: Family,
    template: str | None = None,
    seed: int = 0,
    eos_token_ids: list[str] | None = None,
) -> Path:
    """Write a tiny model of `family` (or with another `template`) to `path`."""
    tokens = ["<unk>", "<s>", family.eos]
    types = [UNKNOWN, CONTROL, CONTROL]
    for s in family.specials:
        if s not in tokens:
            tokens.append(s)
            types.append(CONTROL)
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [BYTE] * 256
    tokens += WORDS
    types += [NORMAL] * len(WORDS)
    scores = [0.0] * (len(tokens) - len(WORDS)) + [-float(i) for i in range(len(WORDS))]
    n_vocab, n_embd, n_ff, n_layer, n_head = len(tokens), 64, 128, 2, 4

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("endmark tiny test model")  # a name with "phi3" in it changes llama.cpp's rules
    w.add_context_length(512)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    if family.eot is not None:
        w.add_eot_token_id(tokens.index(family.eot))
    w.add_chat_template(template if template is not None else family.template)
    if eos_token_ids:
        w.add_array("tokenizer.ggml.eos_token_ids", [tokens.index(t) for t in eos_token_ids])

    _write_llama_weights(w, seed, n_vocab, n_embd, n_ff, n_layer)
    return path


# -- infill and reranking: FIM tokens, and a rank head ------------------------------------------

FIM_TOKENS = {  # llama.cpp's key suffix -> Qwen2.5-Coder's token text
    "pre": "<|fim_prefix|>",
    "suf": "<|fim_suffix|>",
    "mid": "<|fim_middle|>",
    "pad": "<|fim_pad|>",
    "rep": "<|repo_name|>",
    "sep": "<|file_sep|>",
}
FIM_PLAIN = ("pre", "suf", "mid", "pad")  # without a repo and a file separator: plain infill


def _tiny_vocab(specials: list[str]) -> tuple[list[str], list[int], list[float]]:
    """<unk> <s> </s>, then `specials` (control), the 256 bytes and WORDS (normal)."""
    tokens = ["<unk>", "<s>", "</s>", *specials]
    types = [UNKNOWN] + [CONTROL] * (2 + len(specials))
    tokens += [f"<0x{b:02X}>" for b in range(256)] + WORDS
    types += [BYTE] * 256 + [NORMAL] * len(WORDS)
    scores = [0.0] * (len(tokens) - len(WORDS)) + [-float(i) for i in range(len(WORDS))]
    return tokens, types, scores


def _write_spm_vocab(
    w: gguf.GGUFWriter, tokens: list[str], types: list[int], scores: list[float]
) -> None:
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)


def _write_fim_ids(w: gguf.GGUFWriter, tokens: list[str], kinds: tuple[str, ...]) -> None:
    for kind in kinds:  # tokenizer.ggml.fim_pre_token_id, ...
        w.add_uint32(f"tokenizer.ggml.fim_{kind}_token_id", tokens.index(FIM_TOKENS[kind]))


def build_fim_gguf(path: Path, repo_level: bool = True, seed: int = 0) -> Path:
    """A tiny llama whose vocabulary has FIM prefix/suffix/middle/pad tokens and, when
    `repo_level`, the repo-name and file-separator tokens of llama.cpp's repo-level pattern
    (each named by its `tokenizer.ggml.fim_*_token_id` key). No rank head."""
    kinds = tuple(FIM_TOKENS) if repo_level else FIM_PLAIN
    tokens, types, scores = _tiny_vocab([FIM_TOKENS[k] for k in kinds])
    n_vocab, n_embd, n_ff, n_layer, n_head = len(tokens), 64, 128, 2, 4
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("endmark tiny fim model")
    w.add_context_length(512)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    _write_spm_vocab(w, tokens, types, scores)
    w.add_add_eos_token(False)
    _write_fim_ids(w, tokens, kinds)
    _write_llama_weights(w, seed, n_vocab, n_embd, n_ff, n_layer)
    return path


RANK_SEP = "<sep>"


def build_rank_gguf(
    path: Path, seed: int = 0, fim_plain: bool = False, rerank_template: str | None = None
) -> Path:
    """A tiny Qwen3-style reranker: `pooling_type` rank and a `cls.output` head of two labels
    (yes, no), whose softmax's first value llama.cpp gives as the score. Its vocabulary adds
    bos/eos/sep as llama.cpp's rerank prompt wants them (bos query eos sep doc eos). With
    `fim_plain` it also has FIM prefix/suffix/middle/pad (no repo or file separator);
    `rerank_template` is stored as `tokenizer.chat_template.rerank`."""
    specials = [RANK_SEP] + ([FIM_TOKENS[k] for k in FIM_PLAIN] if fim_plain else [])
    tokens, types, scores = _tiny_vocab(specials)
    n_vocab, n_embd, n_ff, n_layer, n_head, head = len(tokens), 32, 64, 2, 2, 16
    w = gguf.GGUFWriter(str(path), "qwen3")
    w.add_name("endmark tiny rank model")
    w.add_context_length(512)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head)
    w.add_key_length(head)
    w.add_value_length(head)
    w.add_rope_dimension_count(head)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_pooling_type(gguf.PoolingType.RANK)
    w.add_classifier_output_labels(["yes", "no"])
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    _write_spm_vocab(w, tokens, types, scores)
    w.add_add_eos_token(True)
    w.add_sep_token_id(tokens.index(RANK_SEP))
    w.add_add_sep_token(True)
    if fim_plain:
        _write_fim_ids(w, tokens, FIM_PLAIN)
    if rerank_template is not None:
        w.add_string("tokenizer.chat_template.rerank", rerank_template)
    rng = np.random.default_rng(seed)

    def t(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.5).astype(np.float32)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    w.add_tensor("token_embd.weight", t(n_vocab, n_embd))
    w.add_tensor("output_norm.weight", ones(n_embd))
    w.add_tensor("cls.output.weight", t(2, n_embd))  # the rank head: [yes, no]
    for i in range(n_layer):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", ones(n_embd))
        w.add_tensor(p + "attn_q.weight", t(n_head * head, n_embd))
        w.add_tensor(p + "attn_k.weight", t(n_head * head, n_embd))
        w.add_tensor(p + "attn_v.weight", t(n_head * head, n_embd))
        w.add_tensor(p + "attn_output.weight", t(n_embd, n_head * head))
        w.add_tensor(p + "attn_q_norm.weight", ones(head))
        w.add_tensor(p + "attn_k_norm.weight", ones(head))
        w.add_tensor(p + "ffn_norm.weight", ones(n_embd))
        w.add_tensor(p + "ffn_gate.weight", t(n_ff, n_embd))
        w.add_tensor(p + "ffn_up.weight", t(n_ff, n_embd))
        w.add_tensor(p + "ffn_down.weight", t(n_embd, n_ff))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def build_lora_gguf(
    path: Path,
    base: Path,
    seed: int = 1,
    rank: int = 4,
    targets: tuple[str, ...] = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_up"),
    task_name: str | None = None,
) -> Path:
    """Write a LoRA adapter for the `build_gguf` model at `base` to `path`: random `lora_a`
    (rank x n_in) and `lora_b` (n_out x rank) for each layer's `targets` and for the output,
    alpha = rank (so scale 1 adds B·A), as llama.cpp's llama-adapter.cpp checks them. Any
    llama-architecture GGUF serves as `base` (the output only where it has its own)."""
    reader = gguf.GGUFReader(str(base))
    shapes = {t.name: tuple(int(n) for n in reversed(t.shape)) for t in reader.tensors}
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    names = [n for n in shapes if n.split(".")[-2] in targets and n.startswith("blk.")]
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), arch)
    w.add_type(gguf.GGUFType.ADAPTER)
    w.add_string(gguf.Keys.Adapter.TYPE, "lora")
    w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(rank))
    if task_name is not None:
        w.add_string("adapter.lora.task_name", task_name)
    for name in names + [n for n in ("output.weight",) if n in shapes]:
        n_out, n_in = shapes[name]  # numpy order: a weight maps n_in to n_out
        stem = name.removesuffix(".weight")
        a = (rng.standard_normal((rank, n_in)) * 0.3).astype(np.float32)
        b = (rng.standard_normal((n_out, rank)) * 0.3).astype(np.float32)
        w.add_tensor(stem + ".weight.lora_a", a)
        w.add_tensor(stem + ".weight.lora_b", b)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _write_llama_weights(
    w: gguf.GGUFWriter, seed: int, n_vocab: int, n_embd: int, n_ff: int, n_layer: int
) -> None:
    """A tiny llama's random weights (one head size for q, k and v), then the file."""
    rng = np.random.default_rng(seed)

    def t(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    w.add_tensor("token_embd.weight", t(n_vocab, n_embd))
    w.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    w.add_tensor("output.weight", t(n_vocab, n_embd))
    for i in range(n_layer):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            w.add_tensor(p + name + ".weight", t(n_embd, n_embd))
        w.add_tensor(p + "ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        w.add_tensor(p + "ffn_gate.weight", t(n_ff, n_embd))
        w.add_tensor(p + "ffn_up.weight", t(n_ff, n_embd))
        w.add_tensor(p + "ffn_down.weight", t(n_embd, n_ff))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# -- the bundled SmolLM2 with another family's markers -------------------------------------------

SPARE_CONTROLS = ("<repo_name>", "<reponame>", "<file_sep>", "<filename>", "<gh_stars>",
                  "<issue_start>", "<issue_comment>", "<issue_closed>")  # fmt: skip
_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # scalar types
_STRING, _ARRAY, _UINT32 = 8, 9, 4


def build_smollm2_variant(path: Path, family: Family, eos: str = "<|endoftext|>") -> Path:
    """The bundled SmolLM2 (trained weights, its BPE vocabulary) speaking `family`: its
    template, and its markers as control tokens. ChatML's markers keep their ids (a family
    that names its own takes them: its first two for `<|im_start|>` and `<|im_end|>`); the
    others take SmolLM2's spare code-control tokens. The eos id is `eos`'s, so an end-of-turn
    marker that no list knows is learned from the template alone.

    The header is rewritten byte by byte and the tensors copied as they are (the `gguf`
    package's reader takes ~10 s over SmolLM2's 100k vocabulary strings)."""
    from endmark.models import bundled_model_path

    data = bundled_model_path().read_bytes()
    n_tensors, n_kv = struct.unpack_from("<QQ", data, 8)
    at, entries = 24, {}
    for _ in range(n_kv):
        key, value_at = _gguf_string(data, at)
        end = _gguf_skip(data, value_at + 4, struct.unpack_from("<I", data, value_at)[0])
        entries[key] = data[at:end]
        at = end
    infos_at = at
    for _ in range(n_tensors):
        _, at = _gguf_string(data, at)
        (n_dims,) = struct.unpack_from("<I", data, at)
        at += 4 + 8 * n_dims + 4 + 8
    align = 32
    tensors = data[_align(at, align) :]

    tokens = _gguf_strings(entries["tokenizer.ggml.tokens"])
    markers = [s for s in family.specials if s not in tokens]
    chatml = [t for t in ("<|im_start|>", "<|im_end|>") if t not in family.specials]
    slots = [tokens.index(t) for t in chatml][: len(markers)]
    slots += [tokens.index(t) for t in SPARE_CONTROLS]
    for marker, slot in zip(markers, slots, strict=False):
        tokens[slot] = marker
    entries["tokenizer.ggml.tokens"] = _gguf_kv_strings("tokenizer.ggml.tokens", tokens)
    eos_key = "tokenizer.ggml.eos_token_id"
    entries[eos_key] = _gguf_key(eos_key) + struct.pack("<II", _UINT32, tokens.index(eos))
    template_key = "tokenizer.chat_template"
    entries[template_key] = (
        _gguf_key(template_key) + struct.pack("<I", _STRING) + _gguf_bytes(family.template)
    )
    head = data[:8] + struct.pack("<QQ", n_tensors, len(entries)) + b"".join(entries.values())
    head += data[infos_at:at]
    path.write_bytes(head + b"\0" * (_align(len(head), align) - len(head)) + tensors)
    return path


def _align(n: int, align: int) -> int:
    return (n + align - 1) // align * align


def _gguf_string(data: bytes, at: int) -> tuple[str, int]:
    (n,) = struct.unpack_from("<Q", data, at)
    return data[at + 8 : at + 8 + n].decode(), at + 8 + n


def _gguf_skip(data: bytes, at: int, kind: int) -> int:
    """Where a value of type `kind` that starts at `at` ends."""
    if kind == _STRING:
        return at + 8 + struct.unpack_from("<Q", data, at)[0]
    if kind != _ARRAY:
        return at + _SIZES[kind]
    item, n = struct.unpack_from("<IQ", data, at)
    at += 12
    if item in _SIZES:
        return at + n * _SIZES[item]
    for _ in range(n):
        at = _gguf_skip(data, at, item)
    return at


def _gguf_strings(entry: bytes) -> list[str]:
    """The values of a string-array entry."""
    _, at = _gguf_string(entry, 0)
    _, n = struct.unpack_from("<IQ", entry, at + 4)
    at, out = at + 16, []
    for _ in range(n):
        text, at = _gguf_string(entry, at)
        out.append(text)
    return out


def _gguf_bytes(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def _gguf_key(key: str) -> bytes:
    return _gguf_bytes(key)


def _gguf_kv_strings(key: str, values: list[str]) -> bytes:
    head = _gguf_key(key) + struct.pack("<IIQ", _ARRAY, _STRING, len(values))
    return head + b"".join(_gguf_bytes(v) for v in values)


# -- benchmark shapes: a real model's size and tokenizer, random weights -------------------------


@dataclass(frozen=True)
class LlamaShape:
    """A Llama-architecture model's size (grouped-query attention: `n_head_kv` <= `n_head`)."""

    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int


def build_shaped_gguf(path: Path, shape: LlamaShape, tokenizer_from: Path, seed: int = 0) -> Path:
    """A Llama of `shape` in F16 with random weights and the tokenizer (and chat template) of
    the GGUF `tokenizer_from`: random weights decode at the speed of trained ones. Tensors are
    written one at a time, so a 1.5B model never sits whole in memory."""
    reader = gguf.GGUFReader(str(tokenizer_from))
    fields = {name: f for name, f in reader.fields.items() if name.startswith("tokenizer.")}
    n_vocab = len(fields["tokenizer.ggml.tokens"].data)
    e, kv, ff = shape.n_embd, shape.n_embd // shape.n_head * shape.n_head_kv, shape.n_ff
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("endmark benchmark model")
    w.add_context_length(8192)
    w.add_embedding_length(e)
    w.add_block_count(shape.n_layer)
    w.add_feed_forward_length(ff)
    w.add_head_count(shape.n_head)
    w.add_head_count_kv(shape.n_head_kv)
    w.add_rope_dimension_count(e // shape.n_head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    for name, f in fields.items():
        vtype = f.types[0]
        sub = f.types[1] if vtype == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(name, f.contents(), vtype, sub)
    shapes: list[tuple[str, tuple[int, ...]]] = [
        ("token_embd.weight", (n_vocab, e)), ("output_norm.weight", (e,)),
        ("output.weight", (n_vocab, e)),
    ]  # fmt: skip
    for i in range(shape.n_layer):
        p = f"blk.{i}."
        shapes += [
            (p + "attn_norm.weight", (e,)), (p + "attn_q.weight", (e, e)),
            (p + "attn_k.weight", (kv, e)), (p + "attn_v.weight", (kv, e)),
            (p + "attn_output.weight", (e, e)), (p + "ffn_norm.weight", (e,)),
            (p + "ffn_gate.weight", (ff, e)), (p + "ffn_up.weight", (ff, e)),
            (p + "ffn_down.weight", (e, ff)),
        ]  # fmt: skip
    for name, dims in shapes:  # norms stay F32, as converters write them
        dtype = np.float32 if len(dims) == 1 else np.float16
        nbytes = int(np.prod(dims)) * np.dtype(dtype).itemsize
        w.add_tensor_info(name, dims, np.dtype(dtype), nbytes)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    rng = np.random.default_rng(seed)
    for _, dims in shapes:
        if len(dims) == 1:
            w.write_tensor_data(np.ones(dims, dtype=np.float32))
        else:
            w.write_tensor_data((rng.standard_normal(dims, np.float32) * 0.02).astype(np.float16))
    w.close()
    return path
