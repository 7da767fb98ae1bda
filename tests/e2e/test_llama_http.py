"""llama-server's HTTP flags and small routes on one server started with them all: the API
prefix, CORS, POST /props, Responses token counting, reasoning control, cache reuse, context
shift, the `llamacpp:*` metrics, and embeddings' and Anthropic's edge cases.

The model is a tiny Qwen3-style one (random weights) whose prompt opens `<think>`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import RunningServer, start_server, stop_server
from tests.gguf_factory import FAMILIES, build_gguf

HI = [{"role": "user", "content": "Hello"}]
FLAGS = (
    "-c", "256", "-np", "2", "--api-prefix", "/api", "--props", "--metrics",
    "--cors-origins", "localhost", "--cors-methods", "GET, POST", "--cors-headers",
    "Authorization, Content-Type", "--no-cors-credentials", "--cache-reuse", "4",
    "--context-shift",
)  # fmt: skip
LLAMACPP = {
    "prompt_tokens_total": "counter", "prompt_tokens_cached_total": "counter",
    "prompt_seconds_total": "counter", "tokens_predicted_total": "counter",
    "tokens_predicted_seconds_total": "counter", "n_decode_total": "counter",
    "n_tokens_max": "counter", "spec_decode_num_draft_tokens_total": "counter",
    "spec_decode_num_accepted_tokens_total": "counter",
    "spec_decode_num_drafts_total": "counter", "prompt_tokens_seconds": "gauge",
    "predicted_tokens_seconds": "gauge", "requests_processing": "gauge",
    "requests_deferred": "gauge", "n_busy_slots_per_decode": "gauge",
}  # fmt: skip


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("http")
    model = build_gguf(folder / "q.gguf", FAMILIES["qwen3"])
    server = start_server(folder, "-m", str(model), *FLAGS, health="/api/health")
    yield server
    stop_server(server)


def post(srv: RunningServer, path: str, body: dict[str, Any], status: int = 200) -> Any:
    r = httpx.post(f"{srv.url}/api{path}", json=body, timeout=120)
    assert r.status_code == status, r.text
    return r.json()


def test_every_route_is_served_under_the_prefix_alone(srv: RunningServer) -> None:
    assert httpx.get(f"{srv.url}/health", timeout=10).status_code == 404
    assert httpx.get(f"{srv.url}/api/props", timeout=10).json()["endpoint_props"] is True
    assert post(srv, "/props", {}) == {"success": True}  # --props
    client = openai.OpenAI(base_url=f"{srv.url}/api/v1", api_key="none", max_retries=0)
    out = client.chat.completions.create(model="m", messages=HI, max_tokens=2)  # type: ignore[arg-type]
    assert out.usage is not None and out.usage.completion_tokens <= 2


def test_post_props_is_refused_without_the_flag(server: RunningServer) -> None:
    r = httpx.post(f"{server.url}/props", json={}, timeout=10)
    assert r.status_code == 501 and "--props" in r.json()["error"]["message"]


def test_cors_answers_with_the_configured_values(srv: RunningServer) -> None:
    def preflight(origin: str) -> httpx.Response:
        headers = {"Origin": origin, "Access-Control-Request-Method": "POST"}
        return httpx.options(f"{srv.url}/api/completion", headers=headers, timeout=10)

    for origin in ("http://localhost:3000", "http://127.0.0.1", "http://[::1]:8080"):
        r = preflight(origin)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == origin
        assert r.headers["access-control-allow-methods"] == "GET, POST"
        assert r.headers["access-control-allow-headers"] == "Authorization, Content-Type"
        assert r.headers["access-control-allow-credentials"] == "false"
    for origin in ("http://evil.com", "http://localhost.evil.com"):
        assert "access-control-allow-origin" not in preflight(origin).headers
    got = httpx.get(f"{srv.url}/api/health", headers={"Origin": "http://localhost"}, timeout=10)
    assert got.headers["access-control-allow-origin"] == "http://localhost"


def test_the_default_cors_policy_reflects_any_origin_with_credentials(
    server: RunningServer,
) -> None:
    headers = {"Origin": "http://web.example", "Access-Control-Request-Method": "POST"}
    r = httpx.options(f"{server.url}/completions", headers=headers, timeout=10)
    assert r.headers["access-control-allow-origin"] == "http://web.example"
    assert r.headers["access-control-allow-credentials"] == "true"
    assert r.headers["access-control-allow-methods"] == "GET, POST, DELETE, OPTIONS"
    assert r.headers["access-control-allow-headers"] == "*"


def test_responses_input_tokens_counts_what_a_response_would_read(srv: RunningServer) -> None:
    body = {"model": "m", "input": "Hello there", "instructions": "Be brief."}
    counted = post(srv, "/v1/responses/input_tokens", body)
    assert counted["object"] == "response.input_tokens"
    made = post(srv, "/v1/responses", {**body, "max_output_tokens": 16, "temperature": 0})
    assert counted["input_tokens"] == made["usage"]["input_tokens"] > 0


def stream_reasoning(srv: RunningServer, control: bool) -> tuple[str, str, Any]:
    """A thinking answer, streamed; with `control`, its thinking is ended after the first
    reasoning piece."""
    body = {"messages": HI, "max_tokens": 400, "temperature": 0, "stream": True,
            "cache_prompt": False, "reasoning_control": True, "ignore_eos": True}  # fmt: skip
    reasoning, content, answer = [], [], None
    with httpx.stream("POST", f"{srv.url}/api/v1/chat/completions", json=body, timeout=120) as r:
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            delta = chunk["choices"][0]["delta"] if chunk["choices"] else {}
            reasoning.append(delta.get("reasoning_content") or "")
            content.append(delta.get("content") or "")
            if control and answer is None and delta.get("reasoning_content"):
                answer = post(srv, "/v1/chat/completions/control",
                              {"id": chunk["id"], "action": "reasoning_end"})  # fmt: skip
    return "".join(reasoning), "".join(content), answer


def test_reasoning_end_closes_a_running_completions_thinking(srv: RunningServer) -> None:
    free, _, _ = stream_reasoning(srv, control=False)
    ended, content, answer = stream_reasoning(srv, control=True)
    assert answer == {"success": True}
    assert len(ended) < len(free) and free.startswith(ended) and content
    missing = post(
        srv, "/v1/chat/completions/control", {"id": "chatcmpl-x", "action": "reasoning_end"}
    )
    assert missing["success"] is False
    assert post(srv, "/v1/chat/completions/control", {"id": "x", "action": "y"}, 400)


def test_cache_reuse_moves_a_repeated_chunk_into_place(srv: RunningServer) -> None:
    head, middle, tail = list(range(20, 50)), list(range(60, 65)), list(range(80, 100))

    def cached(prompt: list[int], **body: Any) -> int:
        out = post(srv, "/completion", {"prompt": prompt, "n_predict": 1, **body})
        return out["tokens_cached"]  # type: ignore[no-any-return]

    cached(head + middle + tail)
    assert cached(head + tail, n_cache_reuse=0) == len(head)  # the request's own setting
    cached(head + middle + tail)
    assert cached(head + tail) == len(head + tail) - 1  # --cache-reuse 4: the tail moved


def test_context_shift_lets_a_generation_go_past_a_full_context(srv: RunningServer) -> None:
    n_ctx_slot = httpx.get(f"{srv.url}/api/props", timeout=10).json()["n_ctx_slot"]
    body = {"prompt": list(range(120, 140)), "n_predict": n_ctx_slot, "ignore_eos": True,
            "temperature": 0, "n_keep": 4}  # fmt: skip
    out = post(srv, "/completion", body)
    assert out["tokens_predicted"] == n_ctx_slot and out["truncated"] is True
    assert out["stop_type"] == "limit"


def metrics(srv: RunningServer) -> dict[str, tuple[str, float]]:
    """Each unlabelled sample by name, with its family's type (read as written: llama-server's
    `llamacpp:n_tokens_max` is a counter without `_total`)."""
    text = httpx.get(f"{srv.url}/api/metrics", timeout=10).text
    types = dict(line.split()[2:4] for line in text.splitlines() if line.startswith("# TYPE"))
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.split()
            family = next(f for f in (name, name.removesuffix("_total")) if f in types)
            out[name] = (types[family], float(value))
    return out


def test_llamacpp_metrics_have_llama_servers_names_types_and_meaning(
    srv: RunningServer,
) -> None:
    before = metrics(srv)
    prompt = "the quick brown fox jumps over the lazy dog"
    done = [post(srv, "/completion", {"prompt": prompt, "n_predict": 2}) for _ in range(2)]
    after = metrics(srv)
    for name, kind in LLAMACPP.items():
        assert after[f"llamacpp:{name}"][0] == kind, name
    assert "endmark_prompt_tokens_total" in after  # endmark's own stay beside them

    def grew(name: str) -> float:
        return after[f"llamacpp:{name}"][1] - before[f"llamacpp:{name}"][1]

    assert grew("prompt_tokens_total") == sum(d["timings"]["prompt_n"] for d in done)
    assert grew("prompt_tokens_cached_total") == sum(d["timings"]["cache_n"] for d in done) > 0
    assert grew("tokens_predicted_total") == sum(d["timings"]["predicted_n"] for d in done)
    assert grew("n_decode_total") > 0 and after["llamacpp:requests_processing"][1] == 0


def test_embeddings_of_equal_inputs_are_equal(srv: RunningServer) -> None:
    parts = {"content": [{"type": "text", "text": "hello "}, {"type": "text", "text": "world"}]}
    data = post(srv, "/v1/embeddings", {"input": ["hello world", "hello world", parts]})["data"]
    assert data[0]["embedding"] == data[1]["embedding"] == data[2]["embedding"]
    image = {"content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]}
    bad = post(srv, "/v1/embeddings", {"input": [image]}, 400)
    assert "image input is not supported" in bad["error"]["message"]


def test_anthropic_empty_messages_and_images_as_llama_server_answers(srv: RunningServer) -> None:
    assert post(srv, "/v1/messages", {"max_tokens": 2, "messages": []})["type"] == "message"
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA"}}
    asked = [{"role": "user", "content": [{"type": "text", "text": "What is it?"}, image]}]
    bad = post(srv, "/v1/messages", {"max_tokens": 2, "messages": asked}, 400)
    assert "image input is not supported" in bad["error"]["message"]
