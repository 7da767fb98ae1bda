"""endmark: a local LLM server where every model ends cleanly, the same way on every endpoint."""

__version__ = "0.1.0"
