"""The Responses dialect's pieces: output items as a stream and whole, the history of input
items, and the bounded store behind `previous_response_id`."""

from __future__ import annotations

import pytest

from endmark.channels import ToolCall
from endmark.delta import Delta
from endmark.server.dialects.responses import OutputItems, ResponseStore, Stored, assistant_message
from endmark.server.dialects.responses_protocol import ResponsesRequest, template_messages
from endmark.server.http.errors import ApiError


def test_a_stream_and_a_whole_answer_build_the_same_items() -> None:
    call = ToolCall("get_weather", '{"city": "Paris"}', "call_1")
    streamed = OutputItems(logprobs=False)
    events = []
    for thinking, text, calls in (("Hmm", "", ()), (" ok", "", ()), ("", "\n", ()),
                                  ("", "", (call,)), ("", " ", ())):  # fmt: skip
        events += streamed.add(Delta(text, thinking, calls))
    events += streamed.finish(incomplete=False)
    whole = OutputItems(logprobs=False)
    whole.add(Delta("\n", "Hmm ok", (call,)))
    whole.add(Delta(" "))
    whole.finish(incomplete=False)

    def strip(items: list[dict]) -> list[dict]:  # type: ignore[type-arg]
        return [{k: v for k, v in i.items() if k != "id"} for i in items]

    assert strip(streamed.items) == strip(whole.items)
    # blank text around a call makes no message
    assert [i["type"] for i in streamed.items] == ["reasoning", "function_call"]
    assert streamed.items[0]["content"][0]["text"] == "Hmm ok"
    kinds = [k for k, _ in events]
    assert kinds.count("response.output_item.added") == kinds.count("response.output_item.done")
    assert "response.function_call_arguments.delta" in kinds


def test_an_answer_with_nothing_in_it_still_has_its_message() -> None:
    items = OutputItems(logprobs=False)
    kinds = [k for k, _ in items.add(Delta(" ")) + items.finish(incomplete=True)]
    assert kinds[0] == "response.output_item.added" and kinds[-1] == "response.output_item.done"
    (message,) = items.items
    assert message["status"] == "incomplete" and message["content"][0]["text"] == " "


def test_input_items_become_template_messages() -> None:
    req = ResponsesRequest.model_validate({"input": [
        {"role": "developer", "content": "Be brief."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": '{"a": 1}'},
        {"type": "function_call", "call_id": "c2", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "one"},
    ]})  # fmt: skip
    messages = req.input_messages()
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool"]
    assert [c["function"]["arguments"] for c in messages[2]["tool_calls"]] == [{"a": 1}, {}]
    assert messages[3] == {"role": "tool", "tool_call_id": "c1", "content": "one"}
    assert template_messages([]) == []


def test_the_store_forgets_the_oldest_and_says_404() -> None:
    store = ResponseStore(size=2)
    for rid in ("a", "b", "c"):
        store.put(rid, Stored({"id": rid}, []))
    assert store.get("c").body == {"id": "c"}
    with pytest.raises(ApiError) as gone:
        store.get("a")
    assert gone.value.status == 404


def test_the_assistant_turn_keeps_text_and_calls() -> None:
    items = OutputItems(logprobs=False)
    items.add(Delta("Let me look.", "", (ToolCall("f", '{"x": 2}', "c9"),)))
    items.finish(incomplete=False)
    turn = assistant_message(items.items)
    assert turn["content"] == "Let me look." and turn["tool_calls"][0]["id"] == "c9"
