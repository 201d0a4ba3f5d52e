"""`client.capabilities`: the registry of capabilities and their parameter schemas.

The call builders (no I/O) and the two namespaces that send what they build: `Capabilities` for
`AegisClient`, `AsyncCapabilities` for `AsyncAegisClient`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aegis_sdk._parsing import list_parser, model_parser
from aegis_sdk._request import AsyncSender, Call, Resource, SyncSender
from aegis_sdk._validation import dump_model, path_segment, validate_model
from aegis_sdk.models import Capability


def list_capabilities_call() -> Call[list[Capability]]:
    return Call("GET", "/capabilities", list_parser(Capability), operation="list_capabilities")


def get_capability_call(name: str) -> Call[Capability]:
    return Call(
        "GET", f"/capabilities/{path_segment(name, 'name')}", model_parser(Capability), operation="get_capability"
    )


def create_capability_call(capability: Capability | Mapping[str, Any]) -> Call[Capability]:
    model = validate_model(Capability, capability, "capability")
    return Call(
        "POST",
        "/capabilities",
        model_parser(Capability),
        body=dump_model(model, "capability"),
        operation="create_capability",
    )


class Capabilities(Resource[SyncSender]):
    """`client.capabilities`: the registry of capabilities and their parameter schemas."""

    def list(self) -> list[Capability]:
        return self._client._request(list_capabilities_call())

    def get(self, name: str) -> Capability:
        return self._client._request(get_capability_call(name))

    def create(self, capability: Capability | Mapping[str, Any]) -> Capability:
        return self._client._request(create_capability_call(capability))


class AsyncCapabilities(Resource[AsyncSender]):
    """`client.capabilities`: the registry of capabilities and their parameter schemas."""

    async def list(self) -> list[Capability]:
        return await self._client._request(list_capabilities_call())

    async def get(self, name: str) -> Capability:
        return await self._client._request(get_capability_call(name))

    async def create(self, capability: Capability | Mapping[str, Any]) -> Capability:
        return await self._client._request(create_capability_call(capability))


__all__ = [
    "AsyncCapabilities",
    "Capabilities",
    "create_capability_call",
    "get_capability_call",
    "list_capabilities_call",
]
