"""`/openapi.json` that describes what the routes really take and answer.

The routes read their bodies themselves (strict UTF-8 and JSON checks come before pydantic),
so FastAPI cannot see the request models; they are added here, with the error answers every
route may give, so that clients and schemathesis see the real contract.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from endmark.server.dialects.anthropic_protocol import CountTokensRequest, MessagesRequest
from endmark.server.dialects.embeddings import EmbeddingsRequest
from endmark.server.dialects.native_protocol import (
    CompletionRequest,
    DetokenizeRequest,
    TokenizeRequest,
)
from endmark.server.dialects.ollama_protocol import (
    ChatRequest,
    EmbedRequest,
    GenerateRequest,
    LegacyEmbeddingsRequest,
    ShowRequest,
)
from endmark.server.dialects.openai_protocol import (
    ApplyTemplateRequest,
    ChatCompletionRequest,
    CompletionsRequest,
)
from endmark.server.dialects.responses_protocol import ResponsesRequest

REQUEST_BODIES: dict[str, type[BaseModel]] = {
    "/completion": CompletionRequest,
    "/completions": CompletionRequest,
    "/apply-template": ApplyTemplateRequest,
    "/tokenize": TokenizeRequest,
    "/detokenize": DetokenizeRequest,
    "/v1/chat/completions": ChatCompletionRequest,
    "/chat/completions": ChatCompletionRequest,
    "/v1/chat/completions/input_tokens": ChatCompletionRequest,
    "/chat/completions/input_tokens": ChatCompletionRequest,
    "/v1/completions": CompletionsRequest,
    "/v1/embeddings": EmbeddingsRequest,
    "/embedding": EmbeddingsRequest,
    "/embeddings": EmbeddingsRequest,
    "/api/chat": ChatRequest,
    "/api/generate": GenerateRequest,
    "/api/embed": EmbedRequest,
    "/api/embeddings": LegacyEmbeddingsRequest,
    "/api/show": ShowRequest,
    "/v1/messages": MessagesRequest,
    "/v1/messages/count_tokens": CountTokensRequest,
    "/v1/responses": ResponsesRequest,
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
# Routes whose 200 answer may be something other than JSON.
OTHER_CONTENT = {
    "/metrics": {"text/plain": {"schema": {"type": "string"}}},
    "/api/chat": {"application/x-ndjson": {"schema": {"type": "string"}}},
    "/api/generate": {"application/x-ndjson": {"schema": {"type": "string"}}},
    **{
        path: {"text/event-stream": {"schema": {"type": "string"}}}
        for path in (
            "/completion",
            "/completions",
            "/chat/completions",
            "/v1/chat/completions",
            "/v1/completions",
            "/v1/messages",
            "/v1/responses",
        )
    },
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


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["Error"] = ERROR_SCHEMA
        for path, operations in schema["paths"].items():
            for method, op in operations.items():
                model = REQUEST_BODIES.get(path) if method == "post" else None
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
                if path in OTHER_CONTENT and "200" in responses:
                    content = responses["200"].setdefault("content", {})
                    if path == "/metrics":
                        content.clear()
                    content.update(OTHER_CONTENT[path])
                for status, text in ERRORS.items():
                    responses[status] = {
                        "description": text,
                        "content": {"application/json": {"schema": ERROR}},
                    }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
