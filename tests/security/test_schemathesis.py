"""schemathesis against the OpenAPI document a real `aegis-server serve` process serves: every route,
valid (positive) and invalid (negative) inputs, with an admin key, a key without scopes for the route
and an unknown key. No 5xx, every error in the envelope, every response as the document describes it.

Size: AEGIS_FUZZ_EXAMPLES (default 25 examples per route and mode; CI keeps the default).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
)

from reliability._support import ServerProcess, create_key, env_int, sqlite_url

EXAMPLES = env_int("AEGIS_FUZZ_EXAMPLES", 25)
OPEN = ("/api/v1/health", "/api/v1/ready")
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance, response_headers_conformance]
ENVELOPE_KEYS = {"type", "code", "message", "request_id", "details"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict[str, str]]]:
    folder = tmp_path_factory.mktemp("fuzz")
    db = sqlite_url(folder)
    with ServerProcess(db, folder / "server.log") as server:
        keys = {
            "admin": create_key(db, "fuzz-admin", ["admin"]),
            "reader": create_key(db, "fuzz-reader", ["governance:read"]),
            "unknown": "aegis_sk_" + "x" * 43,
        }
        yield server, keys
        logs = server.logs()
    assert "Traceback" not in logs, logs[-4000:]


@pytest.fixture(scope="module")
def api_schema(served: tuple[ServerProcess, dict[str, str]]) -> Any:
    server, _ = served
    return schemathesis.openapi.from_url(f"{server.endpoint}/openapi.json")


def _check_envelope(response: Any) -> None:
    status = response.status_code
    assert status < 500, f"{status}: {response.text[:500]}"
    if status >= 400:
        body = response.json()
        assert set(body) == {"error"}, body
        assert set(body["error"]) == ENVELOPE_KEYS, body
        assert body["error"]["request_id"] in response.headers["x-request-id"]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_every_route_with_any_input_and_key(
    api_schema: Any, served: tuple[ServerProcess, dict[str, str]], mode: GenerationMode
) -> None:
    _, keys = served
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 20, [op.label for op in operations]

    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def run(case: Any) -> None:
            for who, key in keys.items():
                response = case.call(headers={"Authorization": f"Bearer {key}"}, timeout=30)
                case.validate_response(response, checks=CHECKS)
                _check_envelope(response)
                if who == "unknown" and case.path.startswith("/api/v1/") and case.path not in OPEN:
                    assert response.status_code in (400, 401, 405, 413, 415, 422), response.text[:300]

        try:
            run()
        except Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE  # a route without inputs has no invalid input to send
        except Exception as exc:
            raise AssertionError(f"{operation.label} ({mode.value}): {exc}") from exc
