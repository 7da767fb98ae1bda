"""The one exception every layer raises for a request that cannot be served as asked."""

from __future__ import annotations


class InvalidRequest(ValueError):
    """The message is for the client; `param` names the request field at fault."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param
