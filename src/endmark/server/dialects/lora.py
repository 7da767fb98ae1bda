"""llama-server's `GET` and `POST /lora-adapters`: the loaded LoRA adapters and their global
scales, which a request's own `lora` list overrides for that request."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from pydantic import TypeAdapter, ValidationError

from endmark.server.dialects.fields import LoraScale
from endmark.server.http.errors import ApiError, NumberOutOfRange, describe_validation, loads_strict
from endmark.server.http.state import runtime_of

router = APIRouter()
SCALES = TypeAdapter(list[LoraScale])


@router.get("/lora-adapters")
async def lora_adapters(request: Request) -> list[dict[str, Any]]:
    """`[{id, path, scale, task_name, prompt_prefix}]`, ids in the order of the flags."""
    return runtime_of(request).lora_adapters()


@router.post("/lora-adapters")
async def set_lora_adapters(request: Request) -> dict[str, bool]:
    """`[{id, scale}]`: the new global scales; an adapter left out goes to 0."""
    rt = runtime_of(request)
    entries = scales_of(await request.body())
    rt.set_lora_scales([(e.id, e.scale) for e in entries])
    return {"success": True}


def scales_of(raw: bytes) -> list[LoraScale]:
    """The body, an array of `{id, scale}`; anything else is a 400."""
    try:
        data = loads_strict(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, NumberOutOfRange, RecursionError):
        raise ApiError(400, "the request body is not valid JSON") from None
    if not isinstance(data, list):
        raise ApiError(400, "Request body must be an array of {id, scale}")
    try:
        return SCALES.validate_python(data)
    except ValidationError as exc:
        message, _ = describe_validation(exc.errors())
        raise ApiError(400, message, "lora") from None
