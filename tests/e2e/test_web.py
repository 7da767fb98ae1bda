"""The chat page in a real browser: Playwright driving Debian's headless Chromium."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import CAPITAL, RunningServer, start_server, stop_server
from tests.e2e.browser import CHROMIUM, chromium


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server of its own: greedy answers depend a little on what a slot has cached, and
    the shared one has served every other test by now."""
    srv = start_server(tmp_path_factory.mktemp("web"))
    yield srv
    stop_server(srv)


pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Debian's chromium (.ci/run installs it)"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


def test_a_streamed_answer_its_stop_reason_and_token_details(
    browser, server: RunningServer, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    page.goto(server.url + "/")
    page.fill("#temperature", "0")
    page.fill("#message", CAPITAL)
    page.press("#message", "Enter")
    reason = page.locator(".turn.assistant .stop-reason").first
    reason.wait_for(timeout=60_000)
    assert "end token <|im_end|>" in reason.inner_text()
    answer = page.locator(".turn.assistant .text").first.inner_text()
    assert "Paris" in answer and "<|im_end|>" not in answer
    assert page.locator(".turn.assistant .tok").count() > 2
    shot = tmp_path / "chat.png"  # the answer and its stop reason, before any hover
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")
    page.locator(".turn.assistant .show-tokens").click()  # the answer's tokens, not its markdown
    page.locator(".turn.assistant .tok").nth(1).hover()
    tooltip = page.locator("#tooltip")
    tooltip.wait_for(state="visible", timeout=5_000)
    assert "p=" in tooltip.inner_text() and "%" in tooltip.inner_text()
    page.screenshot(path=str(tmp_path / "chat-hover.png"))
    page.close()


def test_the_stop_button_cancels_the_request(browser, server: RunningServer) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page()
    page.goto(server.url + "/")
    page.fill("#max-tokens", "3000")
    page.fill("#system", "")
    page.fill("#message", "Write a very long story about a lighthouse keeper.")
    page.press("#message", "Enter")
    page.locator(".turn.assistant .tok").nth(5).wait_for(state="attached", timeout=60_000)
    page.click("#stop")
    reason = page.locator(".turn.assistant .stop-reason").first
    reason.wait_for(timeout=10_000)
    assert "you pressed Stop" in reason.inner_text()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        slots = httpx.get(f"{server.url}/slots", timeout=10).json()
        if not any(s["is_processing"] for s in slots):
            break
        time.sleep(0.1)
    assert not any(s["is_processing"] for s in slots)
    page.close()


def test_a_json_schema_constrains_the_answer(browser, server: RunningServer) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page()
    page.goto(server.url + "/")
    page.fill("#temperature", "0")
    page.fill(
        "#schema",
        '{"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},'
        ' "required": ["city"], "additionalProperties": false}',
    )
    page.fill("#message", "Which city is the capital of France?")
    page.press("#message", "Enter")
    reason = page.locator(".turn.assistant .stop-reason").first
    reason.wait_for(timeout=60_000)
    assert "grammar was complete" in reason.inner_text()
    import json

    assert "city" in json.loads(page.locator(".turn.assistant .text").first.inner_text())
    page.close()
