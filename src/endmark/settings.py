"""Server settings: one dataclass, from command-line flags and ENDMARK_* environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any

# Server-wide sampling defaults (llama-server's --temp, --seed, ...): None leaves each dialect
# its own default (llama.cpp's on the native API, OpenAI's on /v1).
SAMPLING_DEFAULTS = (
    "temperature",
    "seed",
    "top_k",
    "top_p",
    "min_p",
    "repeat_penalty",
    "repeat_last_n",
    "presence_penalty",
    "frequency_penalty",
)


@dataclass
class Settings:
    model: str | None = None
    ctx_size: int = 0  # 0: from the model (each slot gets the training context; see README)
    threads: int | None = None
    threads_batch: int | None = None
    parallel: int = 4
    batch_size: int = 512
    ubatch_size: int = 512
    queue_size: int = 64
    host: str = "127.0.0.1"  # several: comma-separated, as llama-server's --host
    port: int = 8080
    verbose: bool = False
    alias: str | None = None  # several: comma-separated; the first is the model's id
    tags: str | None = None
    chat_template: str | None = None
    chat_template_file: str | None = None
    jinja: bool = True  # False: llama.cpp's built-in template formatting, as llama-server
    chat_parse_special: bool = False  # True: control-token text in messages is parsed (old)
    api_key: str | None = None  # several: comma-separated, or one per line in api_key_file
    api_key_file: str | None = None
    n_predict: int = -1  # default for requests that set no limit; -1: none (llama-server's -n)
    n_predict_cap: int = -1  # endmark: hard cap on every request's tokens; -1: none
    max_body_bytes: int = 4 * 1024 * 1024
    cors: str | None = None  # comma-separated origins, or localhost; None: llama-server's `*`
    cors_methods: str = "GET, POST, DELETE, OPTIONS"
    cors_headers: str = "*"
    cors_credentials: bool = True  # with origins `*`: each Origin is reflected, credentials on
    api_prefix: str = ""  # every route under this path (llama-server's --api-prefix)
    shutdown_grace: int = 10  # seconds running generations get to finish on SIGTERM
    slots_endpoint: bool = True
    metrics: bool = False
    props: bool = False  # POST /props allowed (llama-server's --props)
    cache_reuse: int = 0  # min chunk reused from a slot's cache by shifting it; 0: off
    context_shift: bool = False  # a full context drops half of what follows n_keep, goes on
    ui: bool = True
    # MCP servers whose tools GET/POST /tools offer (Cursor's JSON format): a file, inline
    mcp_servers_config: str | None = None
    mcp_servers_json: str | None = None
    kv_unified: bool = False  # True: slots share one cache of ctx_size tokens
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    flash_attn: str = "auto"
    swa_full: bool = False
    repack: bool = True  # llama.cpp's repacked weights (llama-server's -nr turns them off)
    cont_batching: bool = True
    cache_prompt: bool = True
    slot_save_path: str | None = None  # POST /slots/{id}?action=save|restore: files here
    cache_dir: str | None = None  # the persistent prompt cache's folder (a subfolder a model)
    cache_dir_size: str = "4G"  # its bound, over the whole folder
    cache_ram: int | None = None  # MiB of states in host memory; -1: no limit; 0: none;
    # None: 8192 with --cache-dir, else 0 (no prompt cache)
    cache_min_tokens: int = 256  # shorter prefixes are decoded again, not stored
    spec: str = "ngram"  # speculative decoding: ngram (prompt lookup) or none
    draft_max: int = 8  # tokens one guess may hold (llama-server's --draft-max; its default 16)
    draft_min: int = 0  # a shorter guess is not checked (llama-server's --draft-min)
    fast_forward: bool = True  # check a grammar's forced tokens in one batched decode
    reasoning_format: str = "auto"  # none: thinking stays in content; auto/deepseek: apart
    reasoning_budget: int = -1  # tokens of thinking; 0 skips it, -1 has no limit
    embedding: bool = False  # True: the embedding context is made at start, not on first use
    pooling: str = "auto"  # embeddings: the model's pooling (mean if it names none), or this
    spm_infill: bool = False  # /infill: suffix, prefix, middle (llama-server's --spm-infill)
    # LoRA adapters (--lora, --lora-scaled): `PATH:SCALE,...`, ids in this order
    lora: str | None = None
    lora_init_without_apply: bool = False  # every adapter starts at scale 0
    # several models (router mode): a folder, a models file, and how many stay loaded
    models_dir: str | None = None
    models_file: str | None = None
    models_max: int = 4  # loaded at once; 0: no limit
    models_memory: str | None = None  # total resident size of loaded models, e.g. 8G
    models_autoload: bool = True  # False: a model loads only through POST /models/load
    default_model: str | None = None  # for requests that name none; default: the first
    keep_alive: str = "-1"  # idle time before a model unloads (Ollama's); -1: never
    # replicas on Ray Serve: how many (N or MIN..MAX), and which cluster (none: a local one)
    replicas: str | None = None
    ray_address: str | None = None
    temperature: float | None = None
    seed: int | None = None
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    repeat_last_n: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None

    def api_keys(self) -> tuple[str, ...]:
        keys = [k.strip() for k in (self.api_key or "").split(",")]
        if self.api_key_file:
            with open(self.api_key_file, encoding="utf-8") as f:
                keys += [line.strip() for line in f]
        return tuple(k for k in keys if k and not k.startswith("#"))

    def has_mcp(self) -> bool:
        return bool(self.mcp_servers_config or self.mcp_servers_json)

    def hosts(self) -> list[str]:
        return [h.strip() for h in self.host.split(",") if h.strip()]

    def aliases(self) -> list[str]:
        return [a.strip() for a in (self.alias or "").split(",") if a.strip()]

    def sampling_defaults(self) -> dict[str, Any]:
        """The server-wide sampling defaults that were set."""
        return {k: getattr(self, k) for k in SAMPLING_DEFAULTS if getattr(self, k) is not None}

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Defaults, then ENDMARK_<NAME> variables, then explicit (non-None) overrides."""
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = os.environ.get(f"ENDMARK_{f.name.upper()}")
            if raw is not None:
                values[f.name] = _parse(raw, f.default, str(f.type))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


def _parse(raw: str, default: object, kind: str) -> object:
    text = raw.strip()
    if isinstance(default, bool):
        return text.lower() in ("1", "true", "yes", "on")
    if isinstance(default, int) or kind.startswith("int"):
        return int(text)
    if isinstance(default, float) or kind.startswith("float"):
        return float(text)
    return raw
