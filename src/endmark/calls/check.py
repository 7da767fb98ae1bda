"""Whether a call's arguments fit its tool's schema, without a JSON Schema library.

The grammar makes every call the model finishes valid; a call that endmark closed at the
token limit may lack a required argument (the cut came before it), and one endmark wrote for
a turn that made none has no arguments at all. Such a call is still returned, and its
`problem` says what is wrong. This checks the parts of JSON Schema that tool parameters use
(type, required, properties, additionalProperties, items, enum, const, anyOf/oneOf/allOf);
anything else passes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from endmark.tools import Tool

TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
}


def call_problem(name: str, arguments: str, tools: Sequence[Tool]) -> str:
    """What is wrong with a call of `name` with `arguments` (a JSON text): "" when nothing."""
    tool = next((t for t in tools if t.name == name), None)
    if tool is None:
        return f"no tool named {name!r} was offered" if tools else ""
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError as exc:
        return f"the arguments are not JSON: {exc.msg}"
    return schema_problem(value, tool.parameters)


def schema_problem(value: Any, schema: Any, at: str = "arguments") -> str:
    """The first way `value` breaks `schema` ("" if none), named by where it is (`at`)."""
    if not isinstance(schema, Mapping):
        return ""
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if isinstance(kind, str) else []
    if kinds and not any(_is(value, k) for k in kinds):
        return f"{at}: {_shown(value)} is not of type {' or '.join(kinds)}"
    if "const" in schema and value != schema["const"]:
        return f"{at}: {_shown(value)} is not {_shown(schema['const'])}"
    if isinstance(schema.get("enum"), list) and value not in schema["enum"]:
        return f"{at}: {_shown(value)} is not one of {_shown(schema['enum'])}"
    for word in ("anyOf", "oneOf"):
        branches = schema.get(word)
        if isinstance(branches, list) and branches:
            problems = [schema_problem(value, b, at) for b in branches]
            if all(problems):
                return problems[0]
    for branch in schema.get("allOf") or []:
        problem = schema_problem(value, branch, at)
        if problem:
            return problem
    if isinstance(value, dict):
        return _object_problem(value, schema, at)
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for i, item in enumerate(value):
            problem = schema_problem(item, schema["items"], f"{at}[{i}]")
            if problem:
                return problem
    return ""


def _object_problem(value: dict[str, Any], schema: Mapping[str, Any], at: str) -> str:
    props = schema.get("properties")
    props = props if isinstance(props, Mapping) else {}
    missing = [key for key in schema.get("required") or [] if key not in value]
    if missing:
        named = ", ".join(repr(key) for key in missing)
        return f"{at}: the required {'property' if len(missing) == 1 else 'properties'} " \
            f"{named} {'is' if len(missing) == 1 else 'are'} missing"  # fmt: skip
    for key, item in value.items():
        if key in props:
            problem = schema_problem(item, props[key], f"{at}.{key}")
        elif schema.get("additionalProperties") is False:
            problem = f"{at}: the property {key!r} is not allowed"
        else:
            problem = schema_problem(item, schema.get("additionalProperties"), f"{at}.{key}")
        if problem:
            return problem
    return ""


def _is(value: Any, kind: str) -> bool:
    if kind == "null":
        return value is None
    if kind == "integer" and isinstance(value, float):
        return value.is_integer()
    if isinstance(value, bool) and kind != "boolean":
        return False
    return isinstance(value, TYPES.get(kind, object))


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."
