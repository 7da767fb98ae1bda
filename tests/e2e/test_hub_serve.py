"""`endmark serve -hf` against the local stand-in hub: download, verify, serve; then from the
cache with the hub gone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from openai import OpenAI

from endmark.hub.download import fetch
from endmark.hub.names import parse_ref
from endmark.models import bundled_model_path
from tests.conftest import CAPITAL, RunningServer, start_server, stop_server
from tests.gguf_factory import FAMILIES, build_gguf
from tests.hf_standin import HubStandin

# The tiny random model keeps the suite fast; the bundled SmolLM2 (a real answer that ends on
# its own) runs with ENDMARK_FULL_MATRIX=1.
FULL = os.environ.get("ENDMARK_FULL_MATRIX") == "1"


def test_serve_hf_downloads_verifies_serves_and_then_finds_it_in_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if FULL:
        repo, quant, name, model = (
            "test/smollm2",
            "Q4_1",
            "SmolLM2-135M-Instruct",
            bundled_model_path(),
        )
    else:
        repo, quant, name = "test/tiny-GGUF", "Q4_1", "tiny"
        model = build_gguf(tmp_path / "tiny.gguf", FAMILIES["llama3"])
    file = f"{name}.{quant}.gguf"
    hub = HubStandin()
    hub.add(repo, {file: model, f"{name}.Q8_0.gguf": b"GGUF not this one"})
    hub.start()
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("LLAMA_CACHE", str(tmp_path / "llama-cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    args = ("-hf", f"{repo}:{quant.lower()}", "-c", "256", "-np", "1")
    try:
        srv = start_server(tmp_path, *args)
    finally:
        hub.stop()  # from here on there is no hub to reach
    try:
        answers = [ask(srv, f"{repo}:{quant}")]
        assert f"{file}: done" in srv.log()
        cached = list((tmp_path / "llama-cache").rglob("*.gguf"))
        assert [p.name for p in cached] == [file]  # LLAMA_CACHE is where it went
        # A second start finds it in the cache with no hub to ask: in-process here (the same
        # resolution `serve` makes before loading); a whole second server under the matrix.
        assert fetch(parse_ref(f"{repo}:{quant}")).path == cached[0]
        if FULL:
            stop_server(srv)
            srv = start_server(tmp_path, *args)
            assert f"{file}: in the cache" in srv.log()
            answers.append(ask(srv, f"{repo}:{quant}"))
            assert answers[0] == answers[1]
    finally:
        stop_server(srv)


def ask(srv: RunningServer, model: str) -> str:
    client = OpenAI(base_url=f"{srv.url}/v1", api_key="x")
    chat = client.chat.completions.create(
        model=model, max_tokens=16 if FULL else 3, temperature=0,
        messages=[{"role": "user", "content": CAPITAL}],
    )  # fmt: skip
    choice = chat.choices[0]
    assert choice.finish_reason == ("stop" if FULL else "length")
    text = choice.message.content or ""
    assert "<|eot_id|>" not in text and "<|im_end|>" not in text
    assert chat.model == model
    return text
