"""The Jinja that chat templates run in: llama.cpp's renderer, in a sandbox (`common/jinja`,
`common/chat.cpp`). Its variables (the date, `functions`, thinking on), its leniency (an
undefined value is empty, also added to a string), its list `append` and `pop`, Hugging
Face's `{% generation %}` and `tojson`; a template that reaches for Python internals is
refused before it runs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from jinja2 import ChainableUndefined, nodes
from jinja2.exceptions import SecurityError
from jinja2.ext import Extension
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment


class TemplateRenderError(ValueError):
    """The template raised while rendering these messages (e.g. `raise_exception`)."""


def _raise_exception(message: str) -> None:
    raise TemplateRenderError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def renderer_variables(tools: Any = None) -> dict[str, Any]:
    """What llama.cpp's renderer gives every template besides the messages and tools
    (`common/chat.cpp`): thinking on, today's date in its two forms, and firefunction's
    `functions` (the tools as indented JSON, as llama.cpp's firefunction handler wrote them)."""
    now = datetime.now()
    return {
        "enable_thinking": True,
        "datetime": now.strftime("%b %d %Y"),
        "date_string": now.strftime("%d %b %Y"),
        "functions": json.dumps(tools, indent=2, ensure_ascii=False) if tools else "",
    }


class _LenientUndefined(ChainableUndefined):
    """llama.cpp's Jinja: an undefined value (or one of its attributes) is empty, also when
    added to a string."""

    def __add__(self, other: Any) -> Any:
        return other if isinstance(other, str) else ChainableUndefined.__add__(self, other)

    def __radd__(self, other: Any) -> Any:
        return other if isinstance(other, str) else ChainableUndefined.__radd__(self, other)


class _GenerationBlock(Extension):
    """Hugging Face's `{% generation %}...{% endgeneration %}` (it marks the assistant's tokens
    for training): its body renders as it is."""

    tags = {"generation"}

    def parse(self, parser: Parser) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.Scope(body, lineno=lineno)


def _tojson(value: Any, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False, ensure_ascii: bool = False) -> str:  # fmt: skip
    """Hugging Face's `tojson`: keeps non-ASCII text as is, unlike Jinja's HTML-safe one."""
    return json.dumps(
        value, indent=indent, separators=separators, sort_keys=sort_keys, ensure_ascii=ensure_ascii
    )


class _StrictSandbox(ImmutableSandboxedEnvironment):
    """The sandbox, but an unsafe attribute is an error instead of a silent empty value."""

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        """As llama.cpp's Jinja, a template may `append` to and `pop` from its own lists."""
        if isinstance(obj, list) and attr in ("append", "pop"):
            return True
        return super().is_safe_attribute(obj, attr, value)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__} refused")


def environment() -> _StrictSandbox:
    env = _StrictSandbox(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=["jinja2.ext.loopcontrols", _GenerationBlock],
        undefined=_LenientUndefined,
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


def private_names(tree: nodes.Node) -> Iterator[str]:
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
