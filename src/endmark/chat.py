"""Chat templates: render messages with the model's own Jinja template, safely, and learn from
the template which control tokens end an assistant turn (DESIGN.md, ending rule 1).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import TemplateError as JinjaError
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

BUILTIN_TEMPLATES: dict[str, str] = {
    "chatml": (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + "
        "'<|im_end|>' + '\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    ),
    "llama3": (
        "{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + "
        "'<|end_header_id|>\\n\\n' + m['content'] | trim + '<|eot_id|>' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
        "{% endif %}"
    ),
    "gemma": (
        "{{ bos_token }}{% set ns = namespace(sys='') %}{% for m in messages %}"
        "{% if m['role'] == 'system' %}{% set ns.sys = m['content'] + '\\n\\n' %}"
        "{% else %}{% set role = 'model' if m['role'] == 'assistant' else 'user' %}"
        "{{ '<start_of_turn>' + role + '\\n' }}{% if role == 'user' %}{{ ns.sys }}"
        "{% set ns.sys = '' %}{% endif %}{{ m['content'] | trim }}{{ '<end_of_turn>\\n' }}"
        "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}"
        "{% endif %}"
    ),
    "mistral": (
        "{{ bos_token }}{% set ns = namespace(sys='') %}{% for m in messages %}"
        "{% if m['role'] == 'system' %}{% set ns.sys = m['content'] + '\\n\\n' %}"
        "{% elif m['role'] == 'user' %}{{ '[INST] ' + ns.sys + m['content'] + ' [/INST]' }}"
        "{% set ns.sys = '' %}{% else %}{{ m['content'] + eos_token }}{% endif %}{% endfor %}"
    ),
    "phi3": (
        "{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] + '<|end|>\\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
    ),
}

PROBE_CONTENT = "endmark-probe-5f1c"

# For a model that ships no template: the built-in whose control tokens its vocabulary has.
FAMILY_TOKENS: dict[str, tuple[str, ...]] = {
    "chatml": ("<|im_start|>", "<|im_end|>"),
    "llama3": ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
    "gemma": ("<start_of_turn>", "<end_of_turn>"),
    "phi3": ("<|user|>", "<|assistant|>", "<|end|>"),
    "mistral": ("[INST]", "[/INST]"),
}


class TemplateRefused(ValueError):
    """A template endmark will not run: it reaches for Python internals or does not compile."""


class TemplateRenderError(ValueError):
    """The template raised while rendering these messages (e.g. `raise_exception`)."""


def _raise_exception(message: str) -> None:
    raise TemplateRenderError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _tojson(value: Any, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False, ensure_ascii: bool = False) -> str:  # fmt: skip
    """Hugging Face's `tojson`: keeps non-ASCII text as is, unlike Jinja's HTML-safe one."""
    return json.dumps(
        value, indent=indent, separators=separators, sort_keys=sort_keys, ensure_ascii=ensure_ascii
    )


class _StrictSandbox(ImmutableSandboxedEnvironment):
    """The sandbox, but an unsafe attribute is an error instead of a silent empty value."""

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__} refused")


def _environment() -> _StrictSandbox:
    env = _StrictSandbox(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


def _private_names(tree: nodes.Node) -> Iterator[str]:
    """Attribute and item names starting with `_` anywhere in a parsed template."""
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
            yield node.attr
        elif (
            isinstance(node, nodes.Getitem)
            and isinstance(node.arg, nodes.Const)
            and isinstance(node.arg.value, str)
            and node.arg.value.startswith("_")
        ):
            yield node.arg.value


class ChatTemplate:
    """A compiled, checked template and the special-token texts it may refer to."""

    def __init__(self, source: str, name: str, bos_token: str = "", eos_token: str = "") -> None:
        self.source = source
        self.name = name
        self.bos_token = bos_token
        self.eos_token = eos_token
        env = _environment()
        try:
            tree = env.parse(source)
        except JinjaError as exc:
            raise TemplateRefused(f"the chat template ({name}) does not compile: {exc}") from None
        private = sorted(set(_private_names(tree)))
        if private:
            raise TemplateRefused(
                f"the chat template ({name}) tries to reach Python internals "
                f"({', '.join(private)}); it was refused and runs no code. "
                "Start endmark with --chat-template NAME|FILE to use another one."
            )
        self._template = env.from_string(source)

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        **extra: Any,
    ) -> str:
        try:
            return self._template.render(
                messages=list(messages),
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                **extra,
            )
        except TemplateRenderError:
            raise
        except SecurityError as exc:
            raise TemplateRenderError(f"the chat template was stopped: {exc}") from None
        except JinjaError as exc:
            raise TemplateRenderError(f"the chat template failed: {exc}") from None


def builtin_for_vocab(token_texts: Collection[str]) -> str | None:
    """The one built-in whose turn tokens all exist in the vocabulary, if exactly one fits."""
    fits = [name for name, toks in FAMILY_TOKENS.items() if all(t in token_texts for t in toks)]
    return fits[0] if len(fits) == 1 else None


def load_template(
    override: str | None,
    from_model: str | None,
    bos_token: str = "",
    eos_token: str = "",
    fallback: str | None = None,
) -> ChatTemplate | None:
    """`--chat-template` (a built-in name or a file) wins over the model's own template; a
    model without one gets the built-in `fallback` its vocabulary points to, if any."""
    if override:
        if override in BUILTIN_TEMPLATES:
            return ChatTemplate(BUILTIN_TEMPLATES[override], override, bos_token, eos_token)
        path = Path(override).expanduser()
        if not path.is_file():
            names = ", ".join(BUILTIN_TEMPLATES)
            raise TemplateRefused(
                f"--chat-template {override!r} is neither a file nor a built-in ({names})"
            )
        return ChatTemplate(path.read_text(encoding="utf-8"), str(path), bos_token, eos_token)
    if from_model:
        return ChatTemplate(from_model, "the model's", bos_token, eos_token)
    if fallback:
        name = f"built-in {fallback}, chosen from the vocabulary"
        return ChatTemplate(BUILTIN_TEMPLATES[fallback], name, bos_token, eos_token)
    return None


def end_of_turn_markers(
    template: ChatTemplate,
    tokenize: Callable[[str, bool, bool], list[int]],
    control: Collection[int],
) -> list[int]:
    """The control tokens the template writes right after an assistant message's content."""
    probe = [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": PROBE_CONTENT},
    ]
    try:
        text = template.render(probe, add_generation_prompt=False)
    except TemplateRenderError:
        return []
    at = text.rfind(PROBE_CONTENT)
    if at < 0:
        return []
    markers = []
    for token in tokenize(text[at + len(PROBE_CONTENT) :], False, True):
        if token not in control:
            break
        markers.append(token)
    return markers
