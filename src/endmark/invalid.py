"""The one exception every layer raises for a request that cannot be served as asked."""

from __future__ import annotations

# OpenAI's `code` for a prompt over the context; every dialect's error body keys on it.
CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"


class InvalidRequest(ValueError):
    """The message is for the client; `param` names the request field at fault."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class ContextExceeded(InvalidRequest):
    """The prompt does not fit a slot's context: llama-server's `exceed_context_size_error`,
    OpenAI's `context_length_exceeded`. A prompt of exactly `n_ctx` tokens does not fit
    either: it leaves no room for a single generated token. `param` names the field that
    holds the prompt (`messages`, `input`, `prompt`)."""

    kind = "exceed_context_size_error"
    code = CONTEXT_LENGTH_EXCEEDED

    def __init__(self, n_prompt_tokens: int, n_ctx: int, param: str = "prompt") -> None:
        super().__init__(
            f"the prompt has {n_prompt_tokens} tokens, more than the context of {n_ctx} "
            "tokens per slot can hold with room for an answer",
            param,
        )
        self.n_prompt_tokens = n_prompt_tokens
        self.n_ctx = n_ctx

    def details(self) -> dict[str, int]:
        return {"n_prompt_tokens": self.n_prompt_tokens, "n_ctx": self.n_ctx}
