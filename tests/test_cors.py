"""llama-server's CORS answers, as a policy: which origin is allowed back."""

from __future__ import annotations

from endmark.server.http.cors import CorsPolicy
from endmark.settings import Settings


def test_the_default_reflects_any_origin_and_without_credentials_says_star() -> None:
    policy = CorsPolicy.of(Settings())
    assert policy.allow_origin("http://web.example") == "http://web.example"
    assert CorsPolicy(credentials=False).allow_origin("http://web.example") == "*"


def test_localhost_reflects_only_localhost_origins() -> None:
    policy = CorsPolicy("localhost")
    for origin in ("http://localhost", "http://127.0.0.1:3000", "http://[::1]:8080"):
        assert policy.allow_origin(origin) == origin
    for origin in ("http://evil.com", "http://localhost.evil.com", "http://notlocalhost", ""):
        assert policy.allow_origin(origin) is None


def test_a_list_allows_its_origins_one_at_a_time() -> None:
    policy = CorsPolicy("http://a.example, http://b.example")
    assert policy.allow_origin("http://b.example") == "http://b.example"
    assert policy.allow_origin("http://c.example") is None
