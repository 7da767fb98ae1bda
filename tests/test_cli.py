from __future__ import annotations

import subprocess
import sys

from endmark.cli import build_parser


def test_serve_flags_follow_llama_server() -> None:
    args = build_parser().parse_args(
        ["serve", "-m", "x.gguf", "-c", "2048", "-t", "2", "-np", "2", "--port", "9", "-v"]
    )
    assert (args.model, args.ctx_size, args.threads, args.parallel, args.port, args.verbose) == (
        "x.gguf",
        2048,
        2,
        2,
        9,
        True,
    )
    bare = build_parser().parse_args(["serve"])
    assert bare.model is None and bare.host is None and bare.port is None


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
