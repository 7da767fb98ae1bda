"""Chat templates: render messages with the model's own Jinja template, safely, and learn from
the template which control tokens end an assistant turn (DESIGN.md, ending rule 1). How it
writes tool calls and thinking is learned in `calls/`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Template as JinjaTemplate
from jinja2 import TemplateError as JinjaError
from jinja2.exceptions import SecurityError

from endmark.chat_fit import TemplateCaps, fit_messages, learn_caps
from endmark.chat_jinja import (
    TemplateRenderError,
    environment,
    private_names,
    renderer_variables,
)

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

log = logging.getLogger("endmark")

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


@lru_cache(maxsize=128)
def compiled(source: str) -> tuple[tuple[str, ...], JinjaTemplate]:
    """A template's source parsed and compiled once however often it is loaded (a router's
    models, tests of every real template): the private names it reaches for (then it is
    never run), and the compiled template. Raises jinja2's TemplateError."""
    env = environment()
    tree = env.parse(source)
    return tuple(sorted(set(private_names(tree)))), env.from_string(tree)


class ChatTemplate:
    """A compiled, checked template and the special-token texts it may refer to."""

    def __init__(self, source: str, name: str, bos_token: str = "", eos_token: str = "") -> None:
        self.source = source
        self.name = name
        self.bos_token = bos_token
        self.eos_token = eos_token
        try:
            private, self._template = compiled(source)
        except JinjaError as exc:
            raise TemplateRefused(f"the chat template ({name}) does not compile: {exc}") from None
        if private:
            raise TemplateRefused(
                f"the chat template ({name}) tries to reach Python internals "
                f"({', '.join(private)}); it was refused and runs no code. "
                "Start endmark with --chat-template NAME|FILE to use another one."
            )

    @cached_property
    def caps(self) -> TemplateCaps:
        """What the template accepts (system role, call arguments and ids, tool results),
        learned by probe renders on first use."""
        return learn_caps(self.render_given, self.name)

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        **extra: Any,
    ) -> str:
        """`messages` fitted to what the template accepts (`chat_fit`), rendered."""
        return self.render_given(fit_messages(messages, self.caps), add_generation_prompt, **extra)

    def render_given(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        **extra: Any,
    ) -> str:
        """`messages` rendered as they are, with the variables llama.cpp's renderer provides.
        Any failure is a TemplateRenderError with the template's own message."""
        if not extra.get("tools", True):
            del extra["tools"]  # as llama.cpp: no tools, no `tools` variable
        variables = {
            **renderer_variables(extra.get("tools")),
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            **extra,
        }
        try:
            return self._template.render(
                messages=list(messages), add_generation_prompt=add_generation_prompt, **variables
            )
        except TemplateRenderError:
            raise
        except SecurityError as exc:
            raise TemplateRenderError(f"the chat template was stopped: {exc}") from None
        except JinjaError as exc:
            raise TemplateRenderError(f"the chat template failed: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - a template's own error (`'a' + {}`) is its answer
            raise TemplateRenderError(f"the chat template failed: {exc}") from None


@dataclass(frozen=True)
class NativeFormats:
    """llama.cpp's own C++ chat formats, as the engine exposes them: their names, and a
    function `(name or Jinja source, messages, add_generation_prompt) -> prompt` that fails
    with ValueError on a template it does not recognise."""

    names: frozenset[str]
    apply: Callable[[str, Sequence[Mapping[str, str]], bool], str]


# llama.cpp's own formats take roles and text only: calls are written into the text
NATIVE_CAPS = TemplateCaps(writes_calls=False)


class NativeTemplate:
    """A chat format rendered by llama.cpp's formatter (llama-server without --jinja)."""

    bos_token = ""
    eos_token = ""

    def __init__(self, key: str, formats: NativeFormats, name: str) -> None:
        self.source = key
        self.name = name
        self._formats = formats
        self.render([{"role": "user", "content": "x"}])  # fails now on an unknown format

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        **extra: Any,
    ) -> str:
        fitted = fit_messages(messages, NATIVE_CAPS)
        plain = [{"role": str(m["role"]), "content": str(m.get("content") or "")} for m in fitted]
        try:
            return self._formats.apply(self.source, plain, add_generation_prompt)
        except ValueError as exc:
            raise TemplateRefused(str(exc)) from None


Template = ChatTemplate | NativeTemplate


def continue_final(template: Template, messages: Sequence[Mapping[str, Any]], **extra: Any) -> str:
    """The prompt that continues the last (assistant) message instead of closing it: the
    whole conversation rendered, cut right after that message's text."""
    text = template.render(messages, add_generation_prompt=False, **extra)
    content = str(messages[-1].get("content") or "")
    for needle in (content, content.strip()):
        at = text.rfind(needle) if needle else -1
        if at >= 0:
            return text[: at + len(needle)]
    return template.render(messages[:-1], add_generation_prompt=True, **extra) + content


def builtin_for_vocab(token_texts: Collection[str]) -> str | None:
    """The one built-in whose turn tokens all exist in the vocabulary, if exactly one fits."""
    fits = [name for name, toks in FAMILY_TOKENS.items() if all(t in token_texts for t in toks)]
    return fits[0] if len(fits) == 1 else None


@dataclass(frozen=True)
class TemplateChoice:
    """What the user asked for: `--chat-template`, `--chat-template-file`, `--[no-]jinja`."""

    name_or_source: str | None = None
    file: str | None = None
    jinja: bool = True


def load_template(
    choice: TemplateChoice | str | None,
    from_model: str | None,
    bos_token: str = "",
    eos_token: str = "",
    fallback: str | None = None,
    native: NativeFormats | None = None,
) -> Template | None:
    """Which template renders chats, in llama-server's order: `--chat-template-file`, then
    `--chat-template` (a built-in name, a file, or else Jinja source), then the model's own;
    a model without one gets the built-in `fallback` its vocabulary points to, if any.
    Without Jinja (`--no-jinja`), llama.cpp's own formatter renders, as in llama-server."""
    if not isinstance(choice, TemplateChoice):
        choice = TemplateChoice(choice)
    tokens = (bos_token, eos_token)

    def jinja_or_native(source: str, name: str) -> Template:
        if not choice.jinja and native is not None:
            try:
                return NativeTemplate(source, native, f"llama.cpp's format for {name}")
            except TemplateRefused:
                log.warning("--no-jinja: llama.cpp has no format for %s; using its Jinja", name)
        return ChatTemplate(source, name, *tokens)

    if choice.file:
        path = Path(choice.file).expanduser()
        if not path.is_file():
            raise TemplateRefused(f"--chat-template-file {choice.file!r}: no such file")
        return jinja_or_native(path.read_text(encoding="utf-8"), str(path))
    value = choice.name_or_source
    if value:
        native_names = native.names if native is not None else frozenset()
        if value in BUILTIN_TEMPLATES and (choice.jinja or value not in native_names):
            return ChatTemplate(BUILTIN_TEMPLATES[value], value, *tokens)
        if value in native_names and native is not None:
            return NativeTemplate(value, native, f"llama.cpp's built-in {value}")
        if _is_file(value):
            path = Path(value).expanduser()
            return jinja_or_native(path.read_text(encoding="utf-8"), str(path))
        log.warning(
            "--chat-template %r is not a built-in name (%s) nor a file: using it as Jinja source",
            value[:60], ", ".join(sorted(set(BUILTIN_TEMPLATES) | native_names)),
        )  # fmt: skip
        return jinja_or_native(value, "--chat-template")
    if from_model:
        return jinja_or_native(from_model, "the model's")
    if fallback:
        name = f"built-in {fallback}, chosen from the vocabulary"
        return ChatTemplate(BUILTIN_TEMPLATES[fallback], name, *tokens)
    return None


def _is_file(value: str) -> bool:
    """Whether `--chat-template VALUE` names a file (Jinja source is no file name: too long
    for one, or holding characters the system refuses)."""
    try:
        return len(value) < 4096 and Path(value).expanduser().is_file()
    except (OSError, ValueError):
        return False


def check_plain_render(template: Template) -> None:
    """Raises TemplateRenderError, with the template's own message, when the template cannot
    render a plain conversation: such a model has no chat to serve (a template that fails
    only on tool probes still serves, with endmark's generic tool format)."""
    try:
        template.render([{"role": "user", "content": "Hello"}], True)
    except (TemplateRenderError, TemplateRefused) as exc:
        raise TemplateRenderError(
            f"the chat template ({template.name}) cannot render a plain conversation: {exc}"
        ) from None


def _after_assistant(template: Template) -> str:
    """What the template writes right after an assistant message's content ("": nothing,
    or it cannot render one)."""
    probe = [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": PROBE_CONTENT},
    ]
    try:
        text = template.render(probe, add_generation_prompt=False)
    except (TemplateRenderError, TemplateRefused):
        return ""
    at = text.rfind(PROBE_CONTENT)
    return text[at + len(PROBE_CONTENT) :] if at >= 0 else ""


def end_of_turn_markers(
    template: Template,
    tokenize: Callable[[str, bool, bool], list[int]],
    control: Collection[int],
) -> list[int]:
    """The control tokens the template writes right after an assistant message's content;
    none where the first opens a tag (Kimi K3's `<|close|>response<|sep|>`: its `<|close|>`
    closes the think block too, and must not end the turn)."""
    after = _after_assistant(template)
    if _GLUED.match(after):
        return []
    markers = []
    for token in tokenize(after, False, True):
        if token not in control:
            break
        markers.append(token)
    return markers


_GLUED = re.compile(r"<\|[^<>|\s]+\|>[A-Za-z]")  # a special token glued to a tag's name
# a tag: `<|end|>`, `<end_of_turn>`, `</s>`, `[/INST]`; never bare punctuation or a newline
_TAG = re.compile(r"<[|/]?[^<>\s]*[A-Za-z][^<>\s]*>|\[/?[A-Za-z_]+\]")


def end_of_turn_text(
    template: Template,
    tokenize: Callable[[str, bool, bool], list[int]],
    control: Collection[int],
) -> str:
    """The tag the template writes after an assistant message, where this model has no
    control token for it (a template from another family, `--chat-template-file`): a model
    that writes it writes it as text, and it ends the turn as a stop string ("": none, or a
    control token, which `end_of_turn_markers` finds)."""
    after = _after_assistant(template).lstrip()  # (Apriel writes `\n<|end|>\n`)
    found = _TAG.match(after)
    if found is None:
        return ""
    ids = tokenize(found.group(), False, True)
    return "" if len(ids) == 1 and ids[0] in control else found.group()
