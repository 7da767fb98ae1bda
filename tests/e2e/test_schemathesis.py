"""schemathesis against `/openapi.json`: generated requests to every endpoint, no 5xx, and
answers that match the declared statuses, content types and schemas. With
`ENDMARK_FULL_MATRIX=1`, schemathesis's coverage phase too: every field's boundary values."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import RunningServer, start_server, stop_server


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    # --n-predict-cap caps every generation, so that generated n_predict values stay quick.
    folder = tmp_path_factory.mktemp("fuzz")
    # Generated /api/pull names must not download anything: the cache only, in a tmp folder.
    hub_env = {"HF_HUB_OFFLINE": "1", "LLAMA_CACHE": str(folder / "hub-cache")}
    saved = {k: os.environ.get(k) for k in hub_env}
    os.environ.update(hub_env)
    try:
        srv = start_server(folder, "--n-predict-cap", "4", "-np", "2", "-c", "2048", "--metrics")
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
def api(capped: RunningServer) -> Any:
    return schemathesis.openapi.from_url(f"{capped.url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api")


def no_server_error(ctx: Any, response: Any, case: Any) -> bool | None:
    """No 5xx, but llama-server's documented 501 for a feature the server was started
    without (`POST /props` without `--props`, slot files without `--slot-save-path`)."""
    if response.status_code == 501 and "not_supported_error" in response.text:
        return None
    return schemathesis.checks.not_a_server_error(ctx, response, case)  # type: ignore[no-any-return]


@schema.parametrize()
@settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    # the coverage phase (every field's boundary values, ~8400 requests, 40 s): the full matrix
    phases=list(Phase) if os.environ.get("ENDMARK_FULL_MATRIX") == "1" else [Phase.generate],
)
def test_no_5xx_and_answers_match_the_schema(case: Any) -> None:
    case.call_and_validate(
        checks=[
            no_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
        timeout=60,
    )
