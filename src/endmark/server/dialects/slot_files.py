"""llama-server's `POST /slots/{id_slot}?action=save|restore|erase`: a slot's cache to a
file in `--slot-save-path`, back from one, or dropped."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request

from endmark.server.http.errors import ApiError
from endmark.server.http.state import runtime_of
from endmark.slot_states import SlotFileError

router = APIRouter()


@router.post("/slots/{id_slot}")
async def slot_action(request: Request, id_slot: str, action: str = "") -> dict[str, Any]:
    rt = runtime_of(request)
    try:
        slot_id = int(id_slot)
    except ValueError:
        raise ApiError(400, "Invalid slot ID", "id_slot") from None
    raw = await request.body()
    try:
        body = json.loads(raw) if raw.strip() else {}
    except ValueError:
        raise ApiError(400, "the body is not valid JSON") from None
    filename = body.get("filename") if isinstance(body, dict) else None
    try:
        return await rt.slot_action(slot_id, action, filename)
    except SlotFileError as exc:
        raise ApiError(exc.status, str(exc), exc.param) from None
