from __future__ import annotations

import pytest

from endmark.settings import Settings


def test_defaults_bind_loopback_8080() -> None:
    s = Settings()
    assert (s.host, s.port, s.model) == ("127.0.0.1", 8080, None)


def test_env_then_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENDMARK_PORT", "9000")
    monkeypatch.setenv("ENDMARK_VERBOSE", "true")
    monkeypatch.setenv("ENDMARK_THREADS", "3")
    s = Settings.from_env(port=None, ctx_size=1024)
    assert (s.port, s.verbose, s.threads, s.ctx_size) == (9000, True, 3, 1024)
    assert Settings.from_env(port=7000).port == 7000
