"""Thinking markers, learned from how a template writes an assistant's reasoning back (or a
known pair its template or vocabulary has), and split off by the channel splitter."""

from __future__ import annotations

from endmark.calls import ThinkFormat, learn_think_format
from endmark.calls.think import XTML
from endmark.channels import ChannelSplitter
from endmark.chat import BUILTIN_TEMPLATES, ChatTemplate
from tests.gguf_factory import FAMILIES

# Seed-OSS's way, condensed: reasoning written back between <seed:think> tags
SEED = (
    "{% for m in messages %}<seed:bos>{{ m.role }}\n"
    "{% if m.reasoning_content %}<seed:think>{{ m.reasoning_content }}</seed:think>{% endif %}"
    "{{ m.content }}<seed:eos>{% endfor %}{% if add_generation_prompt %}<seed:bos>assistant\n"
    "{% endif %}"
)
# Kimi K3's way, condensed: markers of several tokens, `<|open|>think<|sep|>`
KIMI = (
    "{% for m in messages %}<|open|>{{ m.role }}<|sep|>{% if m.reasoning_content %}"
    "<|open|>think<|sep|>{{ m.reasoning_content }}<|close|>think<|sep|>{% endif %}"
    "{{ m.content }}<|close|>{{ m.role }}<|sep|>{% endfor %}"
)


def learn(source: str, tokens: set[str] | None = None) -> ThinkFormat | None:
    return learn_think_format(ChatTemplate(source, "t"), tokens or set())


def test_the_markers_are_those_the_template_writes_around_reasoning() -> None:
    assert learn(SEED) == ThinkFormat("<seed:think>", "</seed:think>", open=False)
    opened = SEED.replace("assistant\n{% endif", "assistant\n<seed:think>{% endif")
    assert learn(opened) == ThinkFormat("<seed:think>", "</seed:think>", open=True)


def test_a_known_pair_in_the_template_or_vocabulary_else_none() -> None:
    assert learn(FAMILIES["qwen3"].template) == ThinkFormat(open=True)  # <think>, as before
    chatml = BUILTIN_TEMPLATES["chatml"]
    assert learn(chatml, {"<think>", "</think>"}) == ThinkFormat()
    assert learn(chatml + "{# [THINK] #}") == ThinkFormat("[THINK]", "[/THINK]")
    assert learn(chatml) is None
    # not the last piece of a marker of several tokens: the whole XTML tags, with the answer's
    assert learn(KIMI) == XTML


def test_learned_markers_split_the_reasoning_off() -> None:
    splitter = ChannelSplitter(None, ThinkFormat("<seed:think>", "</seed:think>"))
    text = "<seed:think>Let me see.</seed:think>Hello!"
    pieces = [p for ch in text for p in splitter.push(ch)] + splitter.finish()
    assert "".join(p.text for p in pieces if p.channel == "reasoning") == "Let me see."
    assert "".join(p.text for p in pieces if p.channel == "content") == "Hello!"
