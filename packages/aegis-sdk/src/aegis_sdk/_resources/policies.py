"""`client.policies`: manage the policies stored on the platform.

The call builders (no I/O) and the two namespaces that send what they build: `Policies` for `AegisClient`,
`AsyncPolicies` for `AsyncAegisClient`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aegis_sdk._parsing import list_parser, model_parser, parse_nothing
from aegis_sdk._request import AsyncSender, Call, Resource, SyncSender
from aegis_sdk._validation import dump_model, path_segment, validate_model
from aegis_sdk.errors import InvalidRequestError
from aegis_sdk.models import Policy, PolicyValidation


def _path(name: str) -> str:
    return f"/policies/{path_segment(name, 'name')}"


def list_policies_call() -> Call[list[Policy]]:
    return Call("GET", "/policies", list_parser(Policy), operation="list_policies")


def get_policy_call(name: str) -> Call[Policy]:
    return Call("GET", _path(name), model_parser(Policy), operation="get_policy")


def create_policy_call(policy: Policy | Mapping[str, Any]) -> Call[Policy]:
    model = validate_model(Policy, policy, "policy")
    return Call("POST", "/policies", model_parser(Policy), body=dump_model(model, "policy"), operation="create_policy")


def update_policy_call(name: str, policy: Policy | Mapping[str, Any]) -> Call[Policy]:
    model = validate_model(Policy, policy, "policy")
    if model.name != name:
        raise InvalidRequestError(
            f"The policy's name {model.name!r} differs from the name {name!r} being updated; "
            "rename by deleting and creating.",
            code="invalid_request",
        )
    return Call("PUT", _path(name), model_parser(Policy), body=dump_model(model, "policy"), operation="update_policy")


def delete_policy_call(name: str) -> Call[None]:
    return Call("DELETE", _path(name), parse_nothing, operation="delete_policy")


def validate_policy_call(policy: Policy | Mapping[str, Any]) -> Call[PolicyValidation]:
    model = validate_model(Policy, policy, "policy")
    return Call(
        "POST",
        "/policies/validate",
        model_parser(PolicyValidation),
        body=dump_model(model, "policy"),
        operation="validate_policy",
    )


class Policies(Resource[SyncSender]):
    """`client.policies`: manage the policies stored on the platform (needs `policies:manage` to change them)."""

    def list(self) -> list[Policy]:
        return self._client._request(list_policies_call())

    def get(self, name: str) -> Policy:
        return self._client._request(get_policy_call(name))

    def create(self, policy: Policy | Mapping[str, Any]) -> Policy:
        return self._client._request(create_policy_call(policy))

    def update(self, name: str, policy: Policy | Mapping[str, Any]) -> Policy:
        return self._client._request(update_policy_call(name, policy))

    def delete(self, name: str) -> None:
        self._client._request(delete_policy_call(name))

    def validate(self, policy: Policy | Mapping[str, Any]) -> PolicyValidation:
        """Dry run: would the active set still compile with this policy added or replaced?"""
        return self._client._request(validate_policy_call(policy))


class AsyncPolicies(Resource[AsyncSender]):
    """`client.policies`: manage the policies stored on the platform (needs `policies:manage` to change them)."""

    async def list(self) -> list[Policy]:
        return await self._client._request(list_policies_call())

    async def get(self, name: str) -> Policy:
        return await self._client._request(get_policy_call(name))

    async def create(self, policy: Policy | Mapping[str, Any]) -> Policy:
        return await self._client._request(create_policy_call(policy))

    async def update(self, name: str, policy: Policy | Mapping[str, Any]) -> Policy:
        return await self._client._request(update_policy_call(name, policy))

    async def delete(self, name: str) -> None:
        await self._client._request(delete_policy_call(name))

    async def validate(self, policy: Policy | Mapping[str, Any]) -> PolicyValidation:
        """Dry run: would the active set still compile with this policy added or replaced?"""
        return await self._client._request(validate_policy_call(policy))


__all__ = [
    "AsyncPolicies",
    "Policies",
    "create_policy_call",
    "delete_policy_call",
    "get_policy_call",
    "list_policies_call",
    "update_policy_call",
    "validate_policy_call",
]
