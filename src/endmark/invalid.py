"""The one exception every layer raises for a request that cannot be served as asked."""

from __future__ import annotations


class InvalidRequest(ValueError):
    """The message is for the client; `param` names the request field at fault."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class ContextExceeded(InvalidRequest):
    """The prompt does not fit a slot's context; llama-server's `exceed_context_size_error`."""

    kind = "exceed_context_size_error"

    def __init__(self, n_prompt_tokens: int, n_ctx: int) -> None:
        super().__init__(
            f"the prompt has {n_prompt_tokens} tokens, more than the context of {n_ctx} "
            "tokens per slot can hold",
            "prompt",
        )
        self.n_prompt_tokens = n_prompt_tokens
        self.n_ctx = n_ctx

    def details(self) -> dict[str, int]:
        return {"n_prompt_tokens": self.n_prompt_tokens, "n_ctx": self.n_ctx}
