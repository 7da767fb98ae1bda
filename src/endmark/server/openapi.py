"""`/openapi.json` that describes what the routes really take and answer.

The routes read their bodies themselves (strict UTF-8 and JSON checks come before pydantic),
so FastAPI cannot see the request models; they are added here, with the error answers every
route may give, so that clients and schemathesis see the real contract.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from endmark.server.dialects.embeddings import EmbeddingsRequest
from endmark.server.dialects.infill import InfillRequest
from endmark.server.dialects.rerank import RerankRequest
from endmark.server.http.dialect import SSE, Dialect

# Endpoints that belong to no one dialect; every other body is named by its dialect's record.
SHARED_BODIES: dict[str, type[BaseModel]] = {
    "/v1/embeddings": EmbeddingsRequest,
    "/embedding": EmbeddingsRequest,
    "/embeddings": EmbeddingsRequest,
    "/infill": InfillRequest,
    **dict.fromkeys(("/rerank", "/reranking", "/v1/rerank", "/v1/reranking"), RerankRequest),
}
ERROR = {"$ref": "#/components/schemas/Error"}
ERROR_SCHEMA = {  # OpenAI's, llama.cpp's and Anthropic's objects, or Ollama's bare message
    "type": "object",
    "properties": {
        "error": {
            "anyOf": [
                {"type": "object", "properties": {"message": {"type": "string"}}},
                {"type": "string"},
            ]
        }
    },
    "required": ["error"],
}
ERRORS = {
    "400": "the request is invalid (the message names the field)",
    "401": "a missing or wrong API key, when keys are required",
    "404": "what the request names does not exist (such as a stored response's id)",
    "413": "the body is over the size limit",
    "499": "the client closed the request",
    "500": "the generation failed on the server",
    "501": "the endpoint is turned off (/slots without --slots, /metrics without --metrics)",
    "503": "the model is loading, or the queue is full (see Retry-After)",
}


# One server-sent event, as a reader of the stream gets it (OpenAPI 3.2's `itemSchema` shape).
STREAM_ITEM: dict[str, Any] = {
    "type": "object",
    "properties": {"data": {"type": "string"}, "event": {"type": "string"},
                   "id": {"type": "string"}, "retry": {"type": "integer"}},
}  # fmt: skip


def install_openapi(app: FastAPI, dialects: Iterable[Dialect]) -> None:
    bodies = dict(SHARED_BODIES)
    streams: dict[str, dict[str, Any]] = {}
    for dialect in dialects:
        bodies.update(dialect.request_bodies)
        for path, media in dialect.streams.items():
            streams[path] = {media: {"schema": STREAM_ITEM if media == SSE else {"type": "string"}}}

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["Error"] = ERROR_SCHEMA
        for path, operations in schema["paths"].items():
            for method, op in operations.items():
                model = bodies.get(path) if method == "post" else None
                if model is not None:
                    body = model.model_json_schema(ref_template="#/components/schemas/{model}")
                    components.update(body.pop("$defs", {}))
                    components[model.__name__] = body
                    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
                    op["requestBody"] = {
                        "required": True,
                        "content": {"application/json": {"schema": ref}},
                    }
                responses = op.setdefault("responses", {})
                responses.pop("422", None)
                if "200" in responses and path == "/metrics":
                    responses["200"]["content"] = {"text/plain": {"schema": {"type": "string"}}}
                elif "200" in responses and path in streams:
                    responses["200"].setdefault("content", {}).update(streams[path])
                for status, text in ERRORS.items():
                    responses[status] = {
                        "description": text,
                        "content": {"application/json": {"schema": ERROR}},
                    }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
