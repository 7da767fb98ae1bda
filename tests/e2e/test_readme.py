"""The README's examples work as written (pointed at the test server's port)."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

from tests.conftest import RunningServer

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_openai_sdk_example_runs_and_ends_cleanly(server: RunningServer) -> None:
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)  # type: ignore[union-attr]
    assert len([line for line in code.splitlines() if line.strip()]) == 5
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(code.replace("http://127.0.0.1:8080", server.url), {})
    text = out.getvalue()
    assert text.rstrip().endswith(" stop") and "4" in text
    assert "<|im_end|>" not in text


def test_the_readme_test_command_is_what_ci_runs() -> None:
    ci = (README.parent / ".ci" / "run").read_text()
    command = "python3 -m pip install -e '.[test]' && python3 -m pytest -q"
    assert command in README.read_text() and command in ci


def run_example(server: RunningServer, marker: str) -> str:
    """What the README's Python example containing `marker` prints, run against `server`."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    code = next(b for b in blocks if marker in b)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(code.replace("http://127.0.0.1:8080", server.url), {})
    return out.getvalue()


def test_the_tools_example_runs_and_calls_the_tool(server: RunningServer) -> None:
    reason, arguments = run_example(server, "tools=tools").strip().split(" ", 1)
    assert reason == "tool_calls" and "city" in json.loads(arguments)


def test_the_embeddings_example_runs(server: RunningServer) -> None:
    same, near, far = json.loads(run_example(server, "embeddings.create"))
    assert same == 1.0 and near > far  # cosines, as the vectors are normalized


def test_the_ollama_and_anthropic_examples_run(server: RunningServer) -> None:
    ollama_reason = run_example(server, "ollama.Client").split(" ", 1)[0]
    anthropic_reason = run_example(server, "anthropic.Anthropic").split(" ", 1)[0]
    assert ollama_reason in ("stop", "length") and anthropic_reason in ("end_turn", "max_tokens")


def test_the_responses_example_runs(server: RunningServer) -> None:
    status = run_example(server, "responses.create").split(" ", 1)[0]
    assert status in ("completed", "incomplete")
