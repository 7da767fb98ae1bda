"""`endmark serve`'s flags: llama-server's names and meanings.

Three kinds: flags endmark honours (defined in `add_serve_flags`), llama-server flags that
cannot apply to this build (accepted, with one log line saying so), and llama-server flags for
features endmark does not have (a clear error naming the flag, not argparse's generic one).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from typing import Any

from endmark.adapters import AdapterFile, format_adapter_files, parse_adapter_files
from endmark.hub.commands import add_hub_flags

log = logging.getLogger("endmark")

# Every flag spelling llama-server's README lists (llama.cpp as vendored by llama-cpp-python).
LLAMA_SERVER_FLAGS = frozenset(
    """
    --adaptive-decay --adaptive-target --agent --alias --api-key --api-key-file --api-prefix
    --backend-sampling --batch-size --cache-idle-slots --cache-list --cache-prompt --cache-ram
    --cache-reuse --cache-type-k --cache-type-k-draft --cache-type-v --cache-type-v-draft
    --chat-template --chat-template-file --chat-template-kwargs --check-tensors
    --checkpoint-min-step --completion-bash --cont-batching --context-shift --control-vector
    --control-vector-layer-range --control-vector-scaled --cors-credentials --cors-headers
    --cors-methods --cors-origins --cpu-mask --cpu-mask-batch --cpu-mask-batch-draft
    --cpu-mask-draft --cpu-moe --cpu-moe-draft --cpu-range --cpu-range-batch --cpu-range-draft
    --cpu-strict --cpu-strict-batch --cpu-strict-batch-draft --cpu-strict-draft
    --ctx-checkpoints --ctx-size --defrag-thold --device --device-draft --docker-repo --draft
    --draft-max --draft-min --draft-n --draft-n-min --draft-p-min --draft-p-split
    --dry-allowed-length --dry-base --dry-multiplier --dry-penalty-last-n
    --dry-sequence-breaker --dynatemp-exp --dynatemp-range --embd-gemma-default
    --embd-normalize --embedding --embeddings --escape --fim-qwen-1.5b-default
    --fim-qwen-14b-spec --fim-qwen-30b-default --fim-qwen-3b-default --fim-qwen-7b-default
    --fim-qwen-7b-spec --fit --fit-ctx --fit-target --flash-attn --frequency-penalty
    --gpt-oss-120b-default --gpt-oss-20b-default --gpu-layers --gpu-layers-draft --grammar
    --grammar-file --help --hf-file --hf-repo --hf-repo-draft --hf-token --host --ignore-eos
    --image-max-tokens --image-min-tokens --jinja --json-schema --json-schema-file --keep
    --kv-offload --kv-unified --kv-unified-per-slot --lazy-mode --list-devices --load-mode
    --log-colors --log-disable --log-file --log-jsonl --log-prefix --log-prompts-dir
    --log-timestamps --log-verbose --log-verbosity --logit-bias --lookup-cache-dynamic
    --lookup-cache-static --lora --lora-init-without-apply --lora-scaled --main-gpu
    --mcp-servers-config --mcp-servers-json --media-path --metrics --min-p --mirostat
    --mirostat-ent --mirostat-lr --mmproj --mmproj-auto --mmproj-device --mmproj-offload
    --mmproj-url --model --model-draft --model-url --models-autoload --models-dir --models-max
    --models-preset --mtmd-batch-max-tokens --n-cpu-ffn --n-cpu-moe --n-cpu-moe-draft
    --n-gpu-layers --n-gpu-layers-draft --n-predict --no-agent --no-cache-idle-slots
    --no-cache-prompt --no-cont-batching --no-context-shift --no-cors-credentials --no-escape
    --no-host --no-jinja --no-kv-offload --no-kv-unified --no-log-jsonl --no-log-prefix
    --no-log-timestamps --no-mmproj --no-mmproj-auto --no-mmproj-offload --no-models-autoload
    --no-op-offload --no-perf --no-prefill-assistant --no-reasoning-preserve --no-repack
    --no-skip-chat-parsing --no-slots --no-spec-draft-backend-sampling --no-ui
    --no-ui-mcp-proxy --no-warmup --no-webui --no-webui-mcp-proxy --numa --offline --op-offload
    --override-kv --override-tensor --override-tensor-draft --parallel --path --perf --poll
    --poll-batch --poll-batch-draft --poll-draft --pooling --port --predict --prefill-assistant
    --presence-penalty --prio --prio-batch --prio-batch-draft --prio-draft --props --reasoning
    --reasoning-budget --reasoning-budget-message --reasoning-effort --reasoning-format
    --reasoning-preserve --repack --repeat-last-n --repeat-penalty --rerank --reranking
    --reuse-port --reverse-prompt --rope-freq-base --rope-freq-scale --rope-scale
    --rope-scaling --rpc --sampler-seq --samplers --sampling-seq --seed --skip-chat-parsing
    --sleep-idle-seconds --slot-prompt-similarity --slot-save-path --slots --spec-default
    --spec-draft-backend-sampling --spec-draft-cpu-mask --spec-draft-cpu-mask-batch
    --spec-draft-cpu-moe --spec-draft-cpu-range --spec-draft-cpu-strict
    --spec-draft-cpu-strict-batch --spec-draft-device --spec-draft-hf --spec-draft-model
    --spec-draft-n-cpu-moe --spec-draft-n-max --spec-draft-n-min --spec-draft-ncmoe
    --spec-draft-ngl --spec-draft-override-tensor --spec-draft-p-min --spec-draft-p-split
    --spec-draft-poll --spec-draft-poll-batch --spec-draft-prio --spec-draft-prio-batch
    --spec-draft-threads --spec-draft-threads-batch --spec-draft-type-k --spec-draft-type-v
    --spec-ngram-map-k-min-hits --spec-ngram-map-k-size-m --spec-ngram-map-k-size-n
    --spec-ngram-map-k4v-min-hits --spec-ngram-map-k4v-size-m --spec-ngram-map-k4v-size-n
    --spec-ngram-min-hits --spec-ngram-mod-n-match --spec-ngram-mod-n-max
    --spec-ngram-mod-n-min --spec-ngram-simple-min-hits --spec-ngram-simple-size-m
    --spec-ngram-simple-size-n --spec-ngram-size-m --spec-ngram-size-n --spec-synth-len
    --spec-synth-rates --spec-type --special --split-mode --spm-infill --sse-ping-interval
    --ssl-cert-file --ssl-key-file --swa-checkpoints --swa-full --tags --temp --temperature
    --tensor-split --threads --threads-batch --threads-batch-draft --threads-draft
    --threads-http --timeout --tools --tools-runtime --top-k --top-n-sigma --top-nsigma --top-p
    --typical --typical-p --ubatch-size --ui --ui-config --ui-config-file --ui-mcp-proxy
    --usage --verbose --verbosity --version --video-ffmpeg-dir --video-fps
    --video-timestamp-interval --vision-gemma-12b-default --vision-gemma-4b-default --warmup
    --webui --webui-config --webui-config-file --webui-mcp-proxy --xtc-probability
    --xtc-threshold --yarn-attn-factor --yarn-beta-fast --yarn-beta-slow --yarn-ext-factor
    --yarn-orig-ctx -C -Cb -Cbd -Cd -Cr -Crb -Crd -a -ag -b -bs -c -cb -cl -cmoe -cmoed -cms
    -cram -ctk -ctkd -ctv -ctvd -ctxcp -dev -devd -dr -dt -e -fa -fit -fitc -fitt -h -hf -hfd
    -hff -hfr -hfrd -hft -j -jf -kvo -kvu -l -lcd -lcs -lm -lv -lzm -m -md -mg -mm -mmdev -mmu
    -mu -n -ncffn -ncmoe -ncmoed -ngl -ngld -nkvo -no-ag -no-kvu -nocb -np -nr -ot -otd -r -rea
    -s -sm -sp -sps -t -tb -tbd -td -to -ts -ub -v     """.split()
)

# llama-server flags that cannot apply to this build: (spellings, takes a value, why).
NO_EFFECT: tuple[tuple[tuple[str, ...], str | int, str], ...] = (
    (("-ngl", "--gpu-layers", "--n-gpu-layers"), 1, "this build runs on the CPU"),
    (("-sm", "--split-mode"), 1, "this build runs on the CPU"),
    (("-ts", "--tensor-split"), 1, "this build runs on the CPU"),
    (("-mg", "--main-gpu"), 1, "this build runs on the CPU"),
    (("-dev", "--device"), 1, "this build runs on the CPU"),
    (("-fit", "--fit"), "?", "this build runs on the CPU"),
    (("-fitt", "--fit-target"), 1, "this build runs on the CPU"),
    (("-fitc", "--fit-ctx"), 1, "this build runs on the CPU"),
    (("-kvo", "--kv-offload", "-nkvo", "--no-kv-offload"), 0, "this build runs on the CPU"),
    (("--op-offload", "--no-op-offload", "--no-host"), 0, "this build runs on the CPU"),
    (("-cmoe", "--cpu-moe"), 0, "this build runs on the CPU"),
    (("-ncmoe", "--n-cpu-moe"), 1, "this build runs on the CPU"),
    (("-bs", "--backend-sampling"), 0, "this build samples on the CPU"),
    (("--prio", "--prio-batch", "--poll", "--poll-batch"), 1, "llama.cpp's threads run as is"),
    (("--cpu-strict", "--cpu-strict-batch"), 1, "llama.cpp's threads run as is"),
    (("-C", "--cpu-mask", "-Cr", "--cpu-range"), 1, "llama.cpp's threads run as is"),
    (("--threads-http",), 1, "one event loop serves HTTP"),
    (("-to", "--timeout"), 1, "uvicorn keeps its own timeouts"),
    (("--sse-ping-interval",), 1, "endmark sends no SSE pings"),
    (("--perf", "--no-perf"), 0, "timings are always reported"),
    (("--warmup", "--no-warmup"), 0, "endmark does not warm up"),
    (("--log-colors",), "?", "endmark's log has no colours"),
    (("--log-prefix", "--no-log-prefix"), 0, "endmark's log format is fixed"),
    (("--log-timestamps", "--no-log-timestamps"), 0, "endmark's log format is fixed"),
    (("--ui-mcp-proxy", "--webui-mcp-proxy"), 0, "endmark has no MCP proxy"),
    (("--no-ui-mcp-proxy", "--no-webui-mcp-proxy"), 0, "endmark has no MCP proxy"),
)


class NoEffect(argparse.Action):
    """Accept a flag that cannot apply here; `log_no_effect` reports it once the log is set up."""

    def __init__(self, option_strings: Sequence[str], dest: str, reason: str = "", **kw: Any):
        super().__init__(option_strings, dest, **kw)
        self.reason = reason

    def __call__(self, parser: Any, namespace: Any, values: Any, option: str | None = None):
        notes = list(getattr(namespace, self.dest, None) or [])
        notes.append(f"{option}: no effect on this build ({self.reason})")
        setattr(namespace, self.dest, notes)


class Rerank(argparse.Action):
    """llama-server's `--rerank`: embeddings on, pooled by the model's rank head."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option: str | None = None):
        namespace.embedding, namespace.pooling = True, "rank"


class LoraFiles(argparse.Action):
    """`--lora FNAME[,FNAME]` (scale 1) and `--lora-scaled FNAME SCALE` or
    `--lora-scaled FNAME:SCALE[,...]` (llama-server's older and newer forms): each adds
    adapters, ids in command-line order, to the settings' `PATH:SCALE,...` text."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option: str | None = None):
        files = parse_adapter_files(getattr(namespace, self.dest, None))
        if option != "--lora-scaled":
            files += [AdapterFile(p.strip()) for p in str(values).split(",") if p.strip()]
        elif len(values) == 2 and _number(values[1]) is not None:
            files.append(AdapterFile(values[0], _number(values[1])))  # type: ignore[arg-type]
        elif len(values) == 1 and all(":" in v for v in values[0].split(",")):
            files += parse_adapter_files(values[0])
        else:
            parser.error("--lora-scaled takes FNAME SCALE or FNAME:SCALE[,FNAME:SCALE...]")
        setattr(namespace, self.dest, format_adapter_files(files))


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def log_no_effect(args: argparse.Namespace) -> None:
    for note in getattr(args, "no_effect", None) or []:
        log.info("%s", note)


def normalize_argv(argv: Sequence[str]) -> list[str]:
    """llama-server also takes `--flag_name` for `--flag-name`; so does endmark."""
    out = []
    for arg in argv:
        if arg.startswith("--") and "_" in arg.split("=", 1)[0]:
            name, eq, value = arg.partition("=")
            arg = name.replace("_", "-") + eq + value
        out.append(arg)
    return out


def unsupported_flag(argv: Sequence[str], known: set[str]) -> str | None:
    """A llama-server flag endmark does not define, if argv has one."""
    for arg in argv:
        name = arg.split("=", 1)[0]
        if name in LLAMA_SERVER_FLAGS and name not in known:
            return name
    return None


def _bool_pair(p: argparse.ArgumentParser, on: list[str], off: list[str], dest: str, help: str):
    p.add_argument(*on, dest=dest, action="store_true", default=None, help=help)
    p.add_argument(*off, dest=dest, action="store_false", default=None, help=argparse.SUPPRESS)


def add_model_flags(p: argparse.ArgumentParser) -> None:
    """Flags both `serve` and `complete` take: which model, and how it runs."""
    p.add_argument(
        "-m", "--model", action="append",
        help="GGUF file (default: the bundled SmolLM2-135M-Instruct); repeat to serve several",
    )  # fmt: skip
    p.add_argument("-c", "--ctx-size", type=int, help="context tokens (0: from the model)")
    p.add_argument("-t", "--threads", type=int, help="CPU threads (default: all cores)")
    p.add_argument("-tb", "--threads-batch", type=int, help="threads for prompt processing")
    p.add_argument("-np", "--parallel", type=int, help="number of slots (-1: 4)")
    p.add_argument("-b", "--batch-size", type=int, help="tokens per decode step")
    p.add_argument("-ub", "--ubatch-size", type=int, help="physical batch size")
    p.add_argument("-ctk", "--cache-type-k", choices=CACHE_TYPES, help="KV cache type for K")
    p.add_argument("-ctv", "--cache-type-v", choices=CACHE_TYPES, help="KV cache type for V")
    p.add_argument(
        "-fa", "--flash-attn", nargs="?", const="on", choices=("on", "off", "auto"),
        help="flash attention (default auto)",
    )  # fmt: skip
    p.add_argument("--swa-full", action="store_true", default=None, help="full-size SWA cache")
    _bool_pair(
        p, ["--repack"], ["-nr", "--no-repack"], "repack",
        "repacked weights for llama.cpp's batched kernels (default on; -nr: off)",
    )  # fmt: skip
    p.add_argument(
        "-v", "--verbose", "--log-verbose", action="store_true", default=None,
        help="log every sampled token; add __verbose to responses",
    )  # fmt: skip
    p.add_argument("--chat-template", help="a built-in template name, a file, or Jinja source")
    p.add_argument("--chat-template-file", help="a Jinja chat template file")
    _bool_pair(p, ["--jinja"], ["--no-jinja"], "jinja", "Jinja templates (default on)")
    add_hub_flags(p)


CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")


def add_serve_flags(p: argparse.ArgumentParser) -> None:
    add_model_flags(p)
    p.add_argument("--host", help="addresses to bind, comma-separated (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8080)")
    p.add_argument("--queue-size", type=int, help="requests that may wait for a slot")
    p.add_argument(
        "-a", "--alias", action="append",
        help="model names shown to clients, comma-separated; one per -m when repeated",
    )  # fmt: skip
    p.add_argument("--tags", help="model tags, comma-separated (informational)")
    p.add_argument("--api-key", help="require Authorization: Bearer KEY (comma-separate several)")
    p.add_argument("--api-key-file", help="a file of API keys, one per line")
    p.add_argument(
        "-n", "--predict", "--n-predict", dest="n_predict", type=int,
        help="tokens per request when it sets no limit (-1: none)",
    )  # fmt: skip
    p.add_argument("--n-predict-cap", type=int, help="cap on tokens per request (-1: none)")
    p.add_argument("--max-body-bytes", type=int, help="largest request body accepted")
    p.add_argument(
        "--cors", "--cors-origins", dest="cors",
        help="allowed CORS origins, comma-separated, or localhost (default *: any, reflected)",
    )  # fmt: skip
    p.add_argument("--cors-methods", help="CORS methods (default GET, POST, DELETE, OPTIONS)")
    p.add_argument("--cors-headers", help="CORS headers (default *)")
    _bool_pair(
        p, ["--cors-credentials"], ["--no-cors-credentials"], "cors_credentials",
        "CORS credentials allowed (default on)",
    )  # fmt: skip
    p.add_argument("--api-prefix", help="serve every route under this path, e.g. /api")
    p.add_argument("--props", action="store_true", default=None, help="allow POST /props")
    p.add_argument(
        "--cache-reuse", type=int,
        help="min chunk to reuse from a slot's cache by shifting it (default 0: off)",
    )  # fmt: skip
    p.add_argument("--shutdown-grace", type=int, help="seconds running requests get on SIGTERM")
    p.add_argument("--temp", "--temperature", dest="temperature", type=float)
    p.add_argument("-s", "--seed", type=int, help="default seed (-1: random)")
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--min-p", type=float)
    p.add_argument("--repeat-penalty", type=float)
    p.add_argument("--repeat-last-n", type=int)
    p.add_argument("--presence-penalty", type=float)
    p.add_argument("--frequency-penalty", type=float)
    _bool_pair(p, ["--slots"], ["--no-slots"], "slots_endpoint", "GET /slots (default on)")
    p.add_argument("--metrics", action="store_true", default=None, help="GET /metrics")
    _bool_pair(p, ["--ui", "--webui"], ["--no-ui", "--no-webui"], "ui", "the chat page at /")
    p.add_argument(
        "--mcp-servers-config", metavar="FILE",
        help="MCP servers whose tools GET /tools offers (Cursor's JSON; CORS then localhost)",
    )  # fmt: skip
    p.add_argument("--mcp-servers-json", metavar="JSON", help="the same, inline")
    _bool_pair(
        p, ["-kvu", "--kv-unified"], ["-no-kvu", "--no-kv-unified"], "kv_unified",
        "slots share one cache",
    )  # fmt: skip
    _bool_pair(
        p, ["-cb", "--cont-batching"], ["-nocb", "--no-cont-batching"], "cont_batching",
        "continuous batching (default on)",
    )  # fmt: skip
    _bool_pair(
        p, ["--cache-prompt"], ["--no-cache-prompt"], "cache_prompt", "reuse cached prefixes"
    )
    add_cache_flags(p)
    p.add_argument(
        "--spec", "--spec-type", dest="spec", choices=("ngram", "ngram-simple", "none"),
        help="speculative decoding: ngram drafts from the prompt and output (default), none",
    )  # fmt: skip
    p.add_argument(
        "--draft-max", "--draft", "--draft-n", "--spec-draft-n-max", dest="draft_max", type=int,
        help="tokens one draft may hold (default 8)",
    )  # fmt: skip
    p.add_argument(
        "--draft-min", "--draft-n-min", "--spec-draft-n-min", dest="draft_min", type=int,
        help="a shorter draft is not checked (default 0)",
    )  # fmt: skip
    _bool_pair(
        p, ["--context-shift"], ["--no-context-shift"], "context_shift",
        "when the context fills, drop half of what follows n_keep and go on (default off)",
    )  # fmt: skip
    p.add_argument(
        "--reasoning-format", choices=("none", "deepseek", "auto"),
        help="thinking apart in reasoning_content (auto, deepseek) or left in content (none)",
    )  # fmt: skip
    p.add_argument("--reasoning-budget", type=int, help="tokens of thinking (-1: no limit)")
    p.add_argument(
        "--chat-parse-special", action="store_true", default=None,
        help="read control-token text in chat messages as control tokens, as llama-server "
        "does (default: message text is text; unsafe with text you do not trust)",
    )  # fmt: skip
    p.add_argument(
        "--embedding", "--embeddings", dest="embedding", action="store_true", default=None,
        help="make the embedding context at start (it is made on first use otherwise)",
    )  # fmt: skip
    p.add_argument(
        "--pooling", choices=("none", "mean", "cls", "last", "rank"),
        help="how embeddings pool tokens (default: the model's; mean if it names none); "
        "rank: a reranker's scores",
    )  # fmt: skip
    p.add_argument(
        "--rerank", "--reranking", nargs=0, action=Rerank, default=argparse.SUPPRESS,
        help="serve /rerank with the model's rank head (--embedding --pooling rank)",
    )  # fmt: skip
    p.add_argument(
        "--spm-infill", action="store_true", default=None,
        help="/infill: suffix, prefix, middle instead of prefix, suffix, middle",
    )  # fmt: skip
    add_lora_flags(p)
    add_router_flags(p)
    p.add_argument("--replicas", help="serve N replicas (or MIN..MAX, autoscaled) on Ray Serve")
    p.add_argument(
        "--ray-address", help="join this Ray cluster (or `auto`); default: start a local one"
    )
    for names, nargs, reason in NO_EFFECT:
        kw: dict[str, Any] = {"nargs": nargs} if nargs != 1 else {}
        p.add_argument(
            *names, dest="no_effect", action=NoEffect, reason=reason, help=argparse.SUPPRESS, **kw
        )


def add_lora_flags(p: argparse.ArgumentParser) -> None:
    """LoRA adapters, as llama-server loads and scales them."""
    p.add_argument(
        "--lora", dest="lora", action=LoraFiles, metavar="FNAME",
        help="a LoRA adapter at scale 1 (repeat, or comma-separate, for several)",
    )  # fmt: skip
    p.add_argument(
        "--lora-scaled", dest="lora", action=LoraFiles, nargs="+", metavar="FNAME SCALE",
        help="a LoRA adapter at this scale (also FNAME:SCALE[,...]); repeatable",
    )  # fmt: skip
    p.add_argument(
        "--lora-init-without-apply", action="store_true", default=None,
        help="load the adapters at scale 0 (set them later with POST /lora-adapters)",
    )  # fmt: skip


def add_cache_flags(p: argparse.ArgumentParser) -> None:
    """Slot files (llama-server's) and the persistent prompt cache (endmark's)."""
    p.add_argument("--slot-save-path", help="folder for POST /slots/{id}?action=save|restore")
    p.add_argument("--cache-dir", help="keep long prompt prefixes' KV states here, across restarts")
    p.add_argument("--cache-dir-size", help="the most --cache-dir may hold, e.g. 4G (default)")
    p.add_argument(
        "-cram", "--cache-ram", type=int,
        help="MiB of prompt states kept in host memory (-1: no limit, 0: none; default 8192 "
        "with --cache-dir, else 0)",
    )  # fmt: skip
    p.add_argument("--cache-min-tokens", type=int, help="shortest prefix stored (default 256)")


def add_router_flags(p: argparse.ArgumentParser) -> None:
    """Several models in one server: llama-server's router names, and endmark's budget."""
    p.add_argument("--models-dir", help="serve every GGUF in this folder (router mode)")
    p.add_argument("--models-file", help="a TOML file of models and their settings")
    p.add_argument("--models-max", type=int, help="models loaded at once (default 4; 0: any)")
    p.add_argument("--models-memory", help="total resident size of loaded models, e.g. 8G")
    _bool_pair(
        p, ["--models-autoload"], ["--no-models-autoload"], "models_autoload",
        "load a model when a request names it (default on)",
    )  # fmt: skip
    p.add_argument("--default-model", help="the model for requests that name none")
    p.add_argument(
        "--keep-alive", help="idle time before a model unloads, e.g. 5m (default -1: never)"
    )


def serve_flag_names() -> set[str]:
    """Every spelling `endmark serve` defines, with --help and --version."""
    p = argparse.ArgumentParser(add_help=False)
    add_serve_flags(p)
    names = {s for action in p._actions for s in action.option_strings}
    return names | {"-h", "--help", "--usage", "--version"}
