"""examples/traced_call.py, whose output docs/observability.md shows: an application's span, the SDK's spans and
a real `aegis-server serve` process's spans reach one OTLP receiver as ONE trace, for every outcome, and no
attribute carries a parameter value or the API key."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PARAMETER_VALUES = ("DROP TABLE users", "SELECT id, email", "ord_7", "production")


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("traced_call_example", ROOT / "examples" / "traced_call.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def received() -> Iterator[tuple[list[tuple[str, Any]], str]]:
    from opentelemetry import trace
    from opentelemetry.util._once import Once

    try:
        yield load_example().run()
    finally:  # the example set the global TracerProvider, as an application does; the next tests run without
        trace._TRACER_PROVIDER = None
        trace._TRACER_PROVIDER_SET_ONCE = Once()


def attributes(span: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for attribute in span.attributes:
        value = attribute.value
        kind = value.WhichOneof("value")
        out[attribute.key] = (
            [v.string_value for v in value.array_value.values] if kind == "array_value" else getattr(value, kind)
        )
    return out


@pytest.mark.slow
def test_one_trace_from_the_apps_span_through_the_sdk_to_the_servers_steps(
    received: tuple[list[tuple[str, Any]], str],
) -> None:
    spans, _ = received
    (app,) = [span for service, span in spans if span.name == "handle support ticket"]
    ours = [(service, span) for service, span in spans if span.trace_id == app.trace_id]
    children: dict[bytes, list[Any]] = {}
    for _, span in ours:
        children.setdefault(span.parent_span_id, []).append(span)
    clients = children[app.span_id]
    assert [c.name for c in clients] == ["aegis.propose"] * 3 + ["aegis.confirm", "aegis.propose"]
    outcomes = []
    for client in clients:
        (server,) = children[client.span_id]
        assert server.name == "POST /api/v1/governance/propose"
        assert sorted(step.name for step in children[server.span_id]) == [
            "aegis.answer",
            "aegis.commit",
            "aegis.evaluate",
        ]
        client_attributes, server_attributes = attributes(client), attributes(server)
        for key in ("aegis.decision.id", "aegis.decision.outcome", "aegis.capability", "aegis.policy.ids"):
            assert client_attributes[key] == server_attributes[key], key
        outcomes.append(server_attributes["aegis.decision.outcome"])
    assert outcomes == ["ALLOW", "DENY", "REQUIRE_CONFIRMATION", "ALLOW", "ESCALATE"]
    services = {service for service, span in ours}
    assert services == {"support-desk", "aegis-server"}


@pytest.mark.slow
def test_no_attribute_carries_a_parameter_value_or_the_key(received: tuple[list[tuple[str, Any]], str]) -> None:
    spans, key = received
    for _, span in spans:
        text = repr(attributes(span)) + span.name + repr([repr(event) for event in span.events])
        for secret in (*PARAMETER_VALUES, key, key[-12:]):
            assert secret not in text, (span.name, secret)
