"""The table of dialects this server speaks: one line per dialect.

Each record (`endmark.server.http.dialect.Dialect`) sits beside its dialect's wire models and
says what the plumbing needs: its route prefixes, error body, mid-stream error event, finish
words, OpenAPI request models and routing text. The single-model app, router mode and the
replicas' ingress register this same table; none of them imports a dialect's routes. Only
wire modules are imported here, so the table is light enough for a router that loads no model.
"""

from __future__ import annotations

from endmark.server.dialects.anthropic_protocol import ANTHROPIC
from endmark.server.dialects.native_protocol import NATIVE
from endmark.server.dialects.ollama_protocol import OLLAMA
from endmark.server.dialects.openai_protocol import OPENAI
from endmark.server.dialects.responses_protocol import RESPONSES
from endmark.server.http.dialect import Dialect

DIALECTS: tuple[Dialect, ...] = (NATIVE, OPENAI, RESPONSES, ANTHROPIC, OLLAMA)
