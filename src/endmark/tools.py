"""Tools, engine-neutral: what a request offers, and how it may use them.

How a model writes calls (parsing, grammar, history) is its call strategy's (`calls/`);
splitting the output is `channels.py`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Choice = str  # "auto", "none", "required", or the name of the one tool to call
MAX_CALLS = 8  # calls in one turn, at most


@dataclass(frozen=True)
class Tool:
    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object"})

    def as_openai(self) -> dict[str, Any]:
        """The shape Hugging Face chat templates expect in `tools`."""
        function = {"name": self.name, "description": self.description}
        return {"type": "function", "function": {**function, "parameters": self.parameters}}


@dataclass(frozen=True)
class ToolRequest:
    tools: tuple[Tool, ...]
    choice: Choice = "auto"
    parallel: bool = True

    @property
    def forced(self) -> bool:
        """The whole answer must be calls (`required`, or a named tool)."""
        return self.choice not in ("auto", "none")

    @property
    def max_calls(self) -> int:
        """Calls the answer may make: one for a named tool (as OpenAI's forced function) or
        without parallel calls; else MAX_CALLS, since a small model may repeat one forever."""
        named = self.choice not in ("auto", "none", "required")
        return 1 if named or not self.parallel else MAX_CALLS

    @property
    def callable(self) -> tuple[Tool, ...]:
        if self.choice in ("auto", "none", "required"):
            return self.tools
        return tuple(t for t in self.tools if t.name == self.choice)
