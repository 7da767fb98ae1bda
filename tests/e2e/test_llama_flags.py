"""llama-server's command lines on the real CLI: each flag's effect, or its "no effect" line.

The README's flag table is walked too: every flag in it starts a server.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from endmark.models import bundled_model_path
from tests.conftest import RunningServer, start_server, stop_server
from tests.gguf_factory import FAMILIES, build_gguf, build_lora_gguf

README = Path(__file__).resolve().parents[2] / "README.md"
SMALL = ("-c", "1024", "-np", "1")
HI = [{"role": "user", "content": "Hi"}]


def post(srv: RunningServer, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(srv.url + path, json=body, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


@pytest.fixture()
def running(tmp_path: Path) -> Iterator[list[RunningServer]]:
    """Servers a test starts; all stopped at its end."""
    servers: list[RunningServer] = []
    yield servers
    for srv in servers:
        stop_server(srv)


def start(running: list[RunningServer], tmp: Path, *args: str) -> RunningServer:
    srv = start_server(tmp, *args)
    running.append(srv)
    return srv


# -- the README's table ---------------------------------------------------------------------


def readme_rows() -> list[list[str]]:
    """The flags of each row of the README's flag table (each backticked spelling's first)."""
    text = README.read_text()
    lines = text[text.index("### Flags of `endmark serve`") :].splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.startswith("| flag |"))
    rows = []
    for line in lines[header + 2 :]:
        if not line.startswith("|"):
            break
        cell = line.split(" | ")[0]
        rows.append([m.split(",")[0].split()[0] for m in re.findall(r"`([^`]+)`", cell)])
    return rows


SAMPLE_ARGS: dict[str, list[str]] = {
    "-m": [str(bundled_model_path())],
    "-c": ["768"],
    "-np": ["2"],
    "-kvu": [],
    "-t": ["1"],
    "-tb": ["2"],
    "-b": ["256"],
    "-ub": ["128"],
    "-ctk": ["q8_0"],
    "-ctv": ["q8_0", "-fa", "on"],
    "-fa": ["off"],
    "--swa-full": [],
    "--repack": [],
    "-nr": [],
    "-cb": [],
    "-nocb": [],
    "--cache-prompt": [],
    "--no-cache-prompt": [],
    "--host": ["127.0.0.1"],
    "--port": [],  # every test server is started with --port
    "-a": ["one,two"],
    "--tags": ["chat,small"],
    "--chat-template": ["command-r"],
    "--chat-template-file": ["TEMPLATE_FILE"],
    "--jinja": [],
    "--chat-parse-special": [],
    "--no-jinja": [],
    "-n": ["8"],
    "--temp": ["0.5"],
    "-s": ["3"],
    "--top-k": ["10"],
    "--top-p": ["0.9"],
    "--min-p": ["0.1"],
    "--repeat-penalty": ["1.1"],
    "--repeat-last-n": ["32"],
    "--presence-penalty": ["0.1"],
    "--frequency-penalty": ["0.1"],
    "--slots": [],
    "--no-slots": [],
    "--metrics": [],
    "--ui": [],
    "--no-ui": [],
    "--api-key": ["key-1"],
    "--api-key-file": ["KEY_FILE"],
    "--mcp-servers-config": ["MCP_FILE"],
    "--mcp-servers-json": ['{"mcpServers": {}}'],
    "--cors": ["http://app.example"],
    "--cors-origins": ["http://app.example"],
    "--cors-methods": ["GET, POST"],
    "--cors-headers": ["Authorization"],
    "--cors-credentials": [],
    "--no-cors-credentials": [],
    "--api-prefix": ["/"],  # start_server waits on /health: test_llama_http has a real prefix
    "--props": [],
    "--cache-reuse": ["4"],
    "--context-shift": [],
    "--no-context-shift": [],
    "-v": [],
    "--offline": [],
    "--reasoning-format": ["none"],
    "--reasoning-budget": ["0"],
    "--embedding": [],
    "--pooling": ["cls"],
    "--rerank": [],
    "--spm-infill": [],
    "--spec": ["none"],
    "--spec-type": ["ngram"],
    "--draft-max": ["8"],
    "--draft": ["8"],
    "--draft-n": ["8"],
    "--draft-min": ["1"],
    "--draft-n-min": ["1"],
    "--queue-size": ["8"],
    "--n-predict-cap": ["5"],
    "--max-body-bytes": ["100000"],
    "--shutdown-grace": ["2"],
    # an adapter needs its own base model: a made one, with a made adapter
    "--lora": ["LORA_FILE", "-m", "LORA_MODEL"],
    "--lora-scaled": ["LORA_FILE", "0.5"],
    "--lora-init-without-apply": [],
    "--slot-save-path": ["TMP_DIR"],
    "--cache-dir": ["TMP_DIR"],
    "--cache-dir-size": ["1G"],
    "-cram": ["64"],
    "--cache-min-tokens": ["128"],
}


def test_the_readme_table_lists_only_flags_the_walk_knows() -> None:
    rows = readme_rows()
    assert len(rows) >= 35
    assert not [f for row in rows for f in row if f not in SAMPLE_ARGS]


# rows that change what is served (another model, another kind of server), name a file of
# their own kind's, or need another row's opposite (`-ctv q8_0` needs `-fa on`, not `-fa
# off`): each starts alone; the others start eight rows to a server
SOLO = {"-m", "--embedding", "--pooling", "--rerank", "--lora", "--chat-template-file",
        "--api-key-file", "-ctv"}  # fmt: skip
GROUP = 8


def flag_groups() -> list[list[list[str]]]:
    """The README's rows, in groups that start one server each."""
    groups: list[list[list[str]]] = []
    batch: list[list[str]] = []
    for row in readme_rows():
        if SOLO & set(row):
            groups.append([row])
            continue
        batch.append(row)
        if len(batch) == GROUP:
            groups.append(batch)
            batch = []
    return groups + ([batch] if batch else [])


@pytest.mark.parametrize("group", flag_groups(), ids=lambda group: "+".join(r[0] for r in group))
def test_each_readme_flag_starts_the_server(
    group: list[list[str]], tmp_path: Path, running: list[RunningServer]
) -> None:
    """Every flag of the table starts a server; a group that does not start is started row
    by row, so that the failure names its row."""
    try:
        start_rows(group, tmp_path, running)
    except RuntimeError:
        if len(group) == 1:
            raise
        for row in group:
            start_rows([row], tmp_path, running)


def start_rows(rows: list[list[str]], tmp_path: Path, running: list[RunningServer]) -> None:
    (tmp_path / "t.jinja").write_text("{% for m in messages %}{{ m.content }}{% endfor %}")
    (tmp_path / "keys.txt").write_text("key-2\n")
    (tmp_path / "mcp.json").write_text('{"mcpServers": {}}')
    files = {"TEMPLATE_FILE": tmp_path / "t.jinja", "KEY_FILE": tmp_path / "keys.txt",
             "MCP_FILE": tmp_path / "mcp.json"}  # fmt: skip
    flags = [flag for row in rows for flag in row]
    if "--lora" in flags:
        model = build_gguf(tmp_path / "model.gguf", FAMILIES["llama3"])
        files |= {"LORA_MODEL": model, "LORA_FILE": build_lora_gguf(tmp_path / "a.gguf", model)}
    args: list[str] = []
    for flag in flags:
        if flag == "--port":
            continue  # start_server always passes --port
        values = [str(files.get(v, v)) for v in SAMPLE_ARGS[flag]]
        args += [flag, *[str(tmp_path / "dir") if v == "TMP_DIR" else v for v in values]]
    if not {"-c", "-np", "-kvu"} & set(flags):
        args += SMALL
    srv = start(running, tmp_path, *args)
    assert srv.process.poll() is None, rows


# -- effects --------------------------------------------------------------------------------


def test_server_wide_defaults_and_n_predict_with_llama_servers_meaning(
    tmp_path: Path, running: list[RunningServer]
) -> None:
    srv = start(
        running, tmp_path, *SMALL, "--temp", "0", "--seed", "7", "--top-k", "5", "--top-p",
        "0.5", "--min-p", "0.1", "--repeat-penalty", "1.1", "--repeat-last-n", "32",
        "--presence-penalty", "0.25", "--frequency-penalty", "0.5", "-n", "7",
    )  # fmt: skip
    expected = {
        "temperature": 0.0, "seed": 7, "top_k": 5, "top_p": 0.5, "min_p": 0.1,
        "repeat_penalty": 1.1, "repeat_last_n": 32, "presence_penalty": 0.25,
        "frequency_penalty": 0.5, "n_predict": 7,
    }  # fmt: skip
    params = httpx.get(f"{srv.url}/props", timeout=30).json()["default_generation_settings"]
    assert {k: params["params"][k] for k in expected} == expected
    r = post(srv, "/completion", {"prompt": "Once upon a time", "ignore_eos": True})
    assert {k: r["generation_settings"][k] for k in expected} == expected
    assert r["tokens_predicted"] == 7  # -n is the default for a request that sets none
    longer = post(srv, "/completion", {"prompt": "Once", "ignore_eos": True, "n_predict": 20})
    assert longer["tokens_predicted"] == 20  # ... and not a cap, as in llama-server
    own = post(srv, "/completion", {"prompt": "Once", "n_predict": 3, "temperature": 1.5})
    assert own["generation_settings"]["temperature"] == 1.5
    # /v1 takes the server's defaults too: temperature 0 makes two answers equal
    chat = [post(srv, "/v1/chat/completions", {"messages": HI, "max_tokens": 12})["choices"][0]
            for _ in range(2)]  # fmt: skip
    assert chat[0]["message"]["content"] == chat[1]["message"]["content"]


def test_endpoint_switches_slots_metrics_ui_and_names(
    tmp_path: Path, running: list[RunningServer]
) -> None:
    origins = "http://a.example,http://b.example"
    off = start(running, tmp_path, *SMALL, "--no-slots", "--no-ui", "-a", "first,second",
                "--tags", "chat,small", "--cors-origins", origins)  # fmt: skip
    assert httpx.get(f"{off.url}/slots", timeout=30).status_code == 501
    assert httpx.get(f"{off.url}/metrics", timeout=30).status_code == 501  # no --metrics
    assert httpx.get(f"{off.url}/", timeout=30).status_code == 404
    model = httpx.get(f"{off.url}/models", timeout=30).json()["data"][0]
    assert model["id"] == "first" and model["aliases"] == ["first", "second"]
    assert model["tags"] == ["chat", "small"]
    preflight = httpx.options(
        f"{off.url}/v1/chat/completions",
        headers={"Origin": "http://b.example", "Access-Control-Request-Method": "POST"},
        timeout=30,
    )
    assert preflight.headers.get("access-control-allow-origin") == "http://b.example"
    on = start(running, tmp_path, *SMALL, "--slots", "--metrics", "--ui")
    assert httpx.get(f"{on.url}/slots", timeout=30).status_code == 200
    assert httpx.get(f"{on.url}/metrics", timeout=30).status_code == 200
    assert "<html" in httpx.get(f"{on.url}/", timeout=30).text.lower()


def test_kv_unified_lets_one_request_use_the_whole_cache(
    tmp_path: Path, running: list[RunningServer]
) -> None:
    srv = start(running, tmp_path, "-c", "512", "-np", "4", "--kv-unified")
    props = httpx.get(f"{srv.url}/props", timeout=30).json()
    assert props["n_ctx_slot"] == props["n_ctx"] == 512
    prompt = "The sea is calm and blue. " * 40  # about 280 tokens: more than 512 / 4
    r = post(srv, "/completion", {"prompt": prompt, "n_predict": 16, "ignore_eos": True})
    assert r["tokens_evaluated"] > 128 and r["tokens_predicted"] == 16 and not r["truncated"]
    split = start(running, tmp_path, "-c", "512", "-np", "4")
    r = httpx.post(f"{split.url}/completion", json={"prompt": prompt, "n_predict": 4}, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["type"] == "exceed_context_size_error"
    per_slot = httpx.get(f"{split.url}/props", timeout=30).json()["n_ctx_slot"]
    assert per_slot < 280  # llama.cpp rounds a slot's context up to 256
    assert r.json()["error"]["n_ctx"] == per_slot < r.json()["error"]["n_prompt_tokens"]


def rss_mib(srv: RunningServer) -> float:
    status = Path(f"/proc/{srv.process.pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]


def test_cache_types_and_flash_attention(tmp_path: Path, running: list[RunningServer]) -> None:
    big = ("-c", "16384", "-np", "1")
    f16 = start(running, tmp_path, *big)
    q8 = start(running, tmp_path, *big, "-ctk", "q8_0", "-ctv", "q8_0", "-fa", "on")
    # 16,384 cells of SmolLM2's KV: 360 MiB in f16, about 190 MiB in q8_0
    assert rss_mib(f16) - rss_mib(q8) > 100
    for srv in (f16, q8):
        assert post(srv, "/completion", {"prompt": "Hi", "n_predict": 4})["tokens_predicted"] > 0
    # a quantized V cache needs flash attention: with -fa off the server says so and exits
    out = subprocess.run(
        [sys.executable, "-m", "endmark", "serve", *SMALL, "-ctv", "q8_0", "-fa", "off",
         "--port", "0", "-t", "2"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 1 and "a quantized V cache needs -fa on" in out.stderr


def first_and_last_token_times(url: str, results: dict[int, tuple[float, float]], i: int) -> None:
    body = {"prompt": "Once upon a time", "n_predict": 40, "ignore_eos": True, "stream": True}
    first = 0.0
    with httpx.stream("POST", f"{url}/completion", json=body, timeout=120) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and not first:
                first = time.monotonic()
    results[i] = (first, time.monotonic())


@pytest.mark.parametrize("flag,overlap", [("--cont-batching", True), ("--no-cont-batching", False)])
def test_cont_batching_switch(
    flag: str, overlap: bool, tmp_path: Path, running: list[RunningServer]
) -> None:
    srv = start(running, tmp_path, "-c", "1024", "-np", "2", flag)
    results: dict[int, tuple[float, float]] = {}
    threads = [
        threading.Thread(target=first_and_last_token_times, args=(srv.url, results, i))
        for i in range(2)
    ]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join(120)
    (a_first, a_end), (b_first, b_end) = sorted(results.values())
    assert (b_first < a_end) is overlap


def apply_template(srv: RunningServer) -> str:
    return post(srv, "/apply-template", {"messages": HI})["prompt"]  # type: ignore[no-any-return]


def test_chat_template_names_files_and_jinja_switch(
    tmp_path: Path, running: list[RunningServer]
) -> None:
    own = start(running, tmp_path, *SMALL, "--jinja")
    assert "You are a helpful AI assistant named SmolLM" in apply_template(own)  # its Jinja
    legacy = start(running, tmp_path, *SMALL, "--no-jinja")  # llama.cpp's chatml formatter
    assert apply_template(legacy) == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    chatml = start(running, tmp_path, *SMALL, "--chat-template", "chatml")
    assert apply_template(chatml) == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    command_r = start(running, tmp_path, *SMALL, "--chat-template", "command-r")
    assert apply_template(command_r) == (
        "<|START_OF_TURN_TOKEN|><|USER_TOKEN|>Hi<|END_OF_TURN_TOKEN|>"
        "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>"
    )
    template = tmp_path / "t.jinja"
    template.write_text("{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}<bot>")
    from_file = start(running, tmp_path, *SMALL, "--chat-template-file", str(template))
    assert apply_template(from_file) == "<user>Hi<bot>"
    answer = post(from_file, "/v1/chat/completions", {"messages": HI, "max_tokens": 4})
    assert answer["choices"][0]["message"]["content"] is not None


def test_several_host_addresses(tmp_path: Path, running: list[RunningServer]) -> None:
    srv = start(running, tmp_path, *SMALL, "--host", "127.0.0.1,::1")
    port = srv.url.rsplit(":", 1)[1]
    for host in ("127.0.0.1", "[::1]"):
        assert httpx.get(f"http://{host}:{port}/health", timeout=30).status_code == 200


def test_flags_that_cannot_apply_say_so_once(tmp_path: Path, running: list[RunningServer]) -> None:
    srv = start(
        running, tmp_path, *SMALL, "-ngl", "99", "--embedding", "--pooling", "last",
        "-bs", "--no-warmup", "--log-colors", "off", "--threads_http", "4",
    )  # fmt: skip
    lines = [ln for ln in srv.log().splitlines() if "no effect on this build" in ln]
    names = [ln.split("INFO endmark: ")[1].split(":")[0] for ln in lines]
    assert names == ["-ngl", "-bs",
                     "--no-warmup", "--log-colors", "--threads-http"]  # fmt: skip
    assert "embeddings: last pooling" in srv.log()  # --embedding makes the context at start
