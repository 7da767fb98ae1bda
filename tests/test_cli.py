from __future__ import annotations

import subprocess
import sys
import time

from endmark import __version__
from endmark.cli import build_parser


def test_serve_flags_follow_llama_server() -> None:
    args = build_parser().parse_args(
        ["serve", "-m", "x.gguf", "-c", "2048", "-t", "2", "-np", "2", "--port", "9", "-v"]
    )
    assert (args.model, args.ctx_size, args.threads, args.parallel, args.port, args.verbose) == (
        ["x.gguf"],
        2048,
        2,
        2,
        9,
        True,
    )
    bare = build_parser().parse_args(["serve"])
    assert bare.model is None and bare.host is None and bare.port is None


def test_one_model_keeps_its_path_and_aliases_and_several_make_a_router() -> None:
    from endmark.cli import _settings, is_router

    one = build_parser().parse_args(["serve", "-m", "x.gguf", "-a", "a", "-a", "b"])
    settings = _settings(one)
    assert (settings.model, settings.aliases(), is_router(one, settings)) == (
        "x.gguf", ["a", "b"], False,
    )  # fmt: skip
    two = build_parser().parse_args(["serve", "-m", "x.gguf", "-m", "y.gguf", "--models-max", "1"])
    settings = _settings(two)
    assert (settings.model, settings.models_max, is_router(two, settings)) == (None, 1, True)
    folder = build_parser().parse_args(["serve", "--models-dir", "d"])
    assert is_router(folder, _settings(folder))


def test_complete_streams_a_clean_answer_to_stdout() -> None:
    prompt = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    out = subprocess.run(
        [sys.executable, "-m", "endmark", "complete", prompt, "--temp", "0", "-n", "64", "-t", "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "Paris" in out.stdout and "<|im_end|>" not in out.stdout
    assert "loading model" in out.stderr
    assert "[end: eos <|im_end|> (id 2, source vocab)]" in out.stderr


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "endmark", "serve", "--port", "0", "-t", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_a_file_that_is_not_a_gguf_ends_the_server_at_once(tmp_path) -> None:  # type: ignore[no-untyped-def]
    notes = tmp_path / "notes.txt"
    notes.write_text("shopping list\n")
    started = time.monotonic()
    out = serve("-m", str(notes))
    assert out.returncode != 0 and time.monotonic() - started < 10
    assert "is not a GGUF model file" in out.stderr


def test_a_broken_gguf_ends_the_server_non_zero_with_the_reason(tmp_path) -> None:  # type: ignore[no-untyped-def]
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 64)
    started = time.monotonic()
    out = serve("-m", str(broken))
    assert out.returncode == 1 and time.monotonic() - started < 20
    assert "could not load the model" in out.stderr


def test_version() -> None:
    out = subprocess.run([sys.executable, "-m", "endmark", "--version"], capture_output=True,
                         text=True, timeout=30)  # fmt: skip
    assert out.returncode == 0 and out.stdout.strip() == f"endmark {__version__}"


def test_replicas_do_not_combine_with_several_models(capsys) -> None:  # type: ignore[no-untyped-def]
    from endmark.cli import main

    assert main(["serve", "--models-dir", "d", "--replicas", "2"]) == 2
    assert "--replicas serves one model" in capsys.readouterr().err


def test_replica_counts() -> None:
    import pytest

    from endmark.replicas.app import parse_replicas

    assert (parse_replicas("2").min, parse_replicas("2").max) == (2, 2)
    assert (parse_replicas("1..4").min, parse_replicas("1..4").max) == (1, 4)
    for bad in ("0", "3..2", "two"):
        with pytest.raises(ValueError):
            parse_replicas(bad)


def test_a_bad_mcp_config_ends_the_server_at_once(capsys) -> None:  # type: ignore[no-untyped-def]
    from endmark.cli import main

    assert main(["serve", "--mcp-servers-json", '{"mcpServers": 3}']) == 2
    assert 'needs an object "mcpServers"' in capsys.readouterr().err
    args = build_parser().parse_args(["serve", "--mcp-servers-config", "m.json"])
    assert args.mcp_servers_config == "m.json"
