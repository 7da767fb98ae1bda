"""Client libraries that speak tools, run against the real server on the bundled model."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel

from tests.conftest import RunningServer


class CityWeather(BaseModel):
    city: str
    sunny: bool


def test_langchain_bind_tools_and_structured_output(server: RunningServer) -> None:
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return "sunny"

    llm = ChatOpenAI(base_url=f"{server.url}/v1", api_key="none", model="m", temperature=0)
    reply = llm.bind_tools([get_weather], tool_choice="required").invoke(
        "What's the weather in Paris?"
    )
    assert reply.tool_calls and reply.tool_calls[0]["name"] == "get_weather"
    assert isinstance(reply.tool_calls[0]["args"]["city"], str)
    assert "<tool_call>" not in str(reply.content)
    structured = llm.with_structured_output(CityWeather, method="function_calling")
    answer = structured.invoke("Is it sunny in Paris?")
    assert isinstance(answer, CityWeather)  # not None, as it was before tools existed


def test_pydantic_ai_tool_output_and_an_agent_with_one_tool(server: RunningServer) -> None:
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider
    from pydantic_ai.usage import UsageLimits

    provider = OpenAIProvider(base_url=f"{server.url}/v1", api_key="none")
    model = OpenAIChatModel("m", provider=provider)
    settings = {"temperature": 0, "max_tokens": 128}
    # its default structured output is a tool the model must call
    structured = Agent(model, output_type=CityWeather)
    result = structured.run_sync("Is it sunny in Paris?", model_settings=settings)  # type: ignore[arg-type]
    assert isinstance(result.output, CityWeather)
    # an agent with one tool it may call, answering in text
    agent = Agent(model, instructions="Answer in one short sentence.")

    @agent.tool_plain
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return "sunny"

    limits = UsageLimits(request_limit=4)
    answer = agent.run_sync("Is it sunny in Paris?", model_settings=settings, usage_limits=limits)  # type: ignore[arg-type]
    assert isinstance(answer.output, str) and "<tool_call>" not in answer.output


def run_weather_agent(url: str, use_responses: bool) -> tuple[list[str], object]:
    """An OpenAI Agents SDK agent with one function tool it must call, on the Chat
    Completions model or on the SDK's default (Responses); the tool's result is the answer.
    Returns the cities the tool was called with, and the run's final output."""
    agents = pytest.importorskip("agents")
    from openai import AsyncOpenAI

    agents.set_tracing_disabled(True)
    calls: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return "sunny"

    client = AsyncOpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
    provider = agents.OpenAIProvider(openai_client=client, use_responses=use_responses)
    assert type(provider.get_model("m")).__name__ == (
        "OpenAIResponsesModel" if use_responses else "OpenAIChatCompletionsModel"
    )
    agent = agents.Agent(
        name="weather",
        instructions="Answer questions about the weather.",
        tools=[get_weather],
        model_settings=agents.ModelSettings(tool_choice="required", temperature=0, max_tokens=128),
        tool_use_behavior="stop_on_first_tool",
    )
    run = agents.RunConfig(model="m", model_provider=provider)
    result = asyncio.run(agents.Runner.run(agent, "Weather in Paris?", max_turns=4, run_config=run))
    return calls, result.final_output


def test_the_openai_agents_sdk_runs_a_function_tool(server: RunningServer) -> None:
    calls, answer = run_weather_agent(server.url, use_responses=False)
    assert calls and isinstance(calls[0], str)  # the tool ran with parsed arguments
    assert answer == "sunny"
