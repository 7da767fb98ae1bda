"""The chat page in a real browser (Playwright, Debian's Chromium), in router mode with MCP:
one router serves the bundled model and a tiny thinking model, and runs the test MCP server
(tests/data/mcp/sum_server.py) twice: `sums` adds, `naps` sleeps past its 500 ms timeout.
Screenshots of the main states go to the test's folder."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import RunningServer, start_server, stop_server
from tests.e2e.browser import CHROMIUM, chromium
from tests.gguf_factory import FAMILIES, build_gguf

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Debian's chromium (.ci/run installs it)"
)
SUM_SERVER = Path(__file__).parent.parent / "data" / "mcp" / "sum_server.py"
WAIT = 120_000  # ms: a loaded CI machine; the answers themselves are a few tokens


def shot(page: Any, tmp_path: Path, name: str) -> None:
    """A screenshot of a main state, kept in ENDMARK_ARTIFACTS when set (CI's artifacts)."""
    folder = Path(os.environ.get("ENDMARK_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / name))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("page-models")
    (folder / "smollm2.gguf").symlink_to(model_path)
    build_gguf(folder / "thinker.gguf", FAMILIES["qwen3"])
    sums = {"command": sys.executable, "args": [str(SUM_SERVER)], "env": {"SUMS_TOOLS": "add"}}
    naps = {**sums, "env": {"SUMS_TOOLS": "nap"}, "timeout_ms": 500}
    mcp = {"mcpServers": {"sums": sums, "naps": naps}}  # one tool each: a test offers one
    srv = start_server(
        tmp_path_factory.mktemp("page"), "--models-dir", str(folder), "--default-model",
        "smollm2", "-c", "1024", "-np", "1", "--mcp-servers-json", json.dumps(mcp),
    )  # fmt: skip
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


def open_page(browser: Any, server: RunningServer, requests: list[str] | None = None) -> Any:
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    if requests is not None:
        page.on("request", lambda r: requests.append(r.url))
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready='1']", timeout=WAIT)
    page.fill("#temperature", "0")
    return page


def send(page: Any, text: str) -> Any:
    page.fill("#message", text)
    page.press("#message", "Enter")


def offer_only(page: Any, tool: str) -> None:
    """This conversation offers the model one of the server's tools: a short prompt."""
    page.locator(f"#tool-list input[data-tool='{tool}']").wait_for(timeout=WAIT)
    for box in page.locator("#tool-list input").all():
        box.set_checked(box.get_attribute("data-tool") == tool)


def answers(page: Any, count: int) -> None:
    page.wait_for_function(
        f"document.querySelectorAll('.turn.assistant').length == {count}", timeout=WAIT
    )


def last_answer_ended(page: Any) -> Any:
    reason = page.locator(".turn.assistant").last.locator(".stop-reason")
    reason.wait_for(state="visible", timeout=WAIT)
    return reason


def test_markdown_and_code_render_the_stop_badge_shows_the_end_token_and_a_reload_keeps_it(
    browser: Any, server: RunningServer, tmp_path: Path
) -> None:
    requests: list[str] = []
    page = open_page(browser, server, requests)
    page.uncheck("#use-tools")  # a short prompt: this answer needs no tools
    page.fill("#max-tokens", "48")
    send(page, "Write a python hello world in a code block.")
    reason = last_answer_ended(page)
    assert "end token <|im_end|>" in reason.inner_text()
    answer = page.locator(".turn.assistant").last
    assert answer.locator("pre code.hljs").count() >= 1
    assert answer.locator("pre code [class^='hljs-']").count() >= 1  # highlighted
    assert answer.locator(".copy-code").first.is_visible()
    shot(page, tmp_path, "chat-page.png")
    answer.locator(".show-tokens").click()
    answer.locator(".tok").nth(1).click()
    assert "p=" in page.locator("#tooltip").inner_text()

    page.reload()
    page.wait_for_selector("body[data-ready='1']", timeout=WAIT)
    assert page.locator(".turn.user .text").inner_text() == (
        "Write a python hello world in a code block."
    )
    assert page.locator(".turn.assistant pre code").count() >= 1
    assert "end token <|im_end|>" in page.locator(".turn.assistant .stop-reason").inner_text()
    assert page.locator(".conv-title").first.inner_text().startswith("Write a python")
    assert page.input_value("#max-tokens") == "48"  # settings are the conversation's
    assert requests and all(url.startswith(server.url + "/") for url in requests)
    page.close()


def test_an_mcp_tool_call_is_approved_run_and_answered(
    browser: Any, server: RunningServer, tmp_path: Path
) -> None:
    listed = httpx.get(f"{server.url}/tools", timeout=30).json()
    assert [t["tool"] for t in listed] == ["sums_add", "naps_nap"]
    page = open_page(browser, server)
    offer_only(page, "sums_add")
    page.select_option("#tool-choice", "required")
    page.fill("#max-steps", "2")
    page.fill("#max-tokens", "96")
    page.fill("#temperature", "0")  # greedy: the answer after the result ends the same way
    # "then answer with the number": the greedy answer after the result ends the same way
    # whether its prompt is evaluated whole or after a cached prefix (without it, this Q4_1
    # model's answer runs to the limit after some prefixes: see CAPITAL in conftest.py)
    send(page, "What is 2 plus 3? Use the sums_add tool, then answer with the number.")
    approve = page.locator(".tool-card .approve")
    approve.wait_for(timeout=WAIT)
    assert page.locator(".tool-card .card-title").first.inner_text() == "calls sums_add"
    shot(page, tmp_path, "tool-approval.png")
    approve.click()
    result = page.locator(".turn.tool").first
    result.wait_for(timeout=WAIT)
    assert result.locator(".text").inner_text() == "5"
    answers(page, 2)
    reason = last_answer_ended(page)  # the model's answer after the tool's result
    assert "end token <|im_end|>" in reason.inner_text()  # max steps 2: this one has no tools
    assert "5" in page.locator(".turn.assistant").last.locator(".text").inner_text()
    assert page.locator(".tool-card .approve").count() == 0
    shot(page, tmp_path, "tool-answered.png")
    page.close()


def test_a_tool_past_its_timeout_is_a_result_that_says_so_and_the_page_goes_on(
    browser: Any, server: RunningServer, tmp_path: Path
) -> None:
    page = open_page(browser, server)
    offer_only(page, "naps_nap")
    page.select_option("#tool-choice", "required")
    page.fill("#max-steps", "2")
    page.fill("#max-tokens", "48")
    send(page, "Nap for 5 seconds with the naps_nap tool.")
    page.locator(".tool-card .approve").click(timeout=WAIT)
    result = page.locator(".turn.tool").first
    result.wait_for(timeout=WAIT)
    assert result.locator(".text").inner_text() == (
        "Error: the tool naps_nap timed out after 500 ms"
    )
    assert page.locator(".tool-card .approval").first.inner_text() == "failed"
    answers(page, 2)
    last_answer_ended(page)  # the model was told, and answered: the loop went on
    assert page.is_enabled("#send") and page.is_disabled("#stop")
    page.uncheck("#use-tools")
    page.fill("#max-tokens", "4")
    send(page, "Thanks.")
    answers(page, 3)
    last_answer_ended(page)
    shot(page, tmp_path, "tool-timed-out.png")
    page.close()


def test_the_model_picker_switches_to_a_thinking_model_whose_reasoning_folds(
    browser: Any, server: RunningServer, tmp_path: Path
) -> None:
    page = open_page(browser, server)
    picker = page.locator("#model-picker")
    assert picker.is_enabled()
    options = picker.locator("option").all_inner_texts()
    assert any(o.startswith("thinker") for o in options) and len(options) == 2
    picker.select_option("thinker")
    page.uncheck("#use-tools")
    page.fill("#max-tokens", "12")
    send(page, "Hello")
    last_answer_ended(page)
    reasoning = page.locator(".turn.assistant .reasoning")
    assert reasoning.is_visible() and reasoning.get_attribute("open") is None
    assert reasoning.locator(".reasoning-text").text_content().strip()
    shot(page, tmp_path, "reasoning-folded.png")
    reasoning.locator("summary").click()
    assert reasoning.locator(".reasoning-text").is_visible()
    cards = httpx.get(f"{server.url}/v1/models", timeout=30).json()["data"]
    assert {c["id"]: c["status"]["value"] for c in cards}["thinker"] == "loaded"
    assert "loaded" in page.locator("#model-status").inner_text()
    page.close()
