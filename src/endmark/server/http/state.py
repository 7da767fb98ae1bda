"""The app's loading state, shared by every router: a model may still be loading."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from endmark.runtime import Runtime
from endmark.server.http.errors import ApiError


@dataclass
class LoadingState:
    runtime: Runtime | None = None
    progress: float = 0.0
    error: str | None = None


def loading_state(request: Request) -> LoadingState:
    return request.app.state.loading  # type: ignore[no-any-return]


def runtime_of(request: Request) -> Runtime:
    """The loaded runtime, or a 503 while the model loads."""
    state = loading_state(request)
    if state.runtime is None:
        if state.error:
            raise ApiError(500, f"the model failed to load: {state.error}")
        raise ApiError(503, "Loading model", headers={"Retry-After": "1"})
    return state.runtime
