"""`/api/v1/capabilities` and `/api/v1/policies`: the registry and the policy set.

Reads need `governance:read`, writes `policies:manage`. Every write recompiles the whole set and swaps it
only if it compiles (else 422 invalid_policy with the problems), recording the new policy-set version
(made by the key's id) in the write's transaction. Items defined in policy files cannot be
changed through the API (409 policy_conflict).
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from aegis_sdk._wire.envelope import name_mismatch
from aegis_sdk.models import Capability, Policy, PolicyValidation
from aegis_server.api.common import BODY_ERRORS, Manager, Reader, ServiceDep, created_or_replaced, errors

router = APIRouter(prefix="/api/v1", tags=["registry"])


@router.get("/capabilities", response_model=list[Capability], summary="List capabilities", responses=errors())
async def list_capabilities(service: ServiceDep, _: Reader) -> list[Capability]:
    return await service.policies.list_capabilities()


@router.post(
    "/capabilities",
    response_model=Capability,
    status_code=201,
    summary="Register (or replace) a capability",
    description="201 when created, 200 when an API-defined capability of that name was replaced. "
    "A capability defined in a policy file → 409 policy_conflict.",
    responses=created_or_replaced(
        Capability, "Replaced: an API-defined capability of that name existed.", 409, *BODY_ERRORS
    ),
)
async def create_capability(
    capability: Capability, response: Response, service: ServiceDep, principal: Manager
) -> Capability:
    stored, created = await service.policies.put_capability(capability, by=principal.key_id)
    response.status_code = 201 if created else 200
    return stored


@router.get("/capabilities/{name}", response_model=Capability, summary="Get one capability", responses=errors(404))
async def get_capability(name: str, service: ServiceDep, _: Reader) -> Capability:
    return await service.policies.get_capability(name)


@router.get("/policies", response_model=list[Policy], summary="List policies", responses=errors())
async def list_policies(service: ServiceDep, _: Reader) -> list[Policy]:
    return await service.policies.list_policies()


@router.post(
    "/policies",
    response_model=Policy,
    status_code=201,
    summary="Create a policy",
    description="409 policy_conflict when a policy of that name exists (use PUT to replace an API policy).",
    responses=errors(409, *BODY_ERRORS),
)
async def create_policy(policy: Policy, service: ServiceDep, principal: Manager) -> Policy:
    return await service.policies.create_policy(policy, by=principal.key_id)


@router.post(
    "/policies/validate",
    response_model=PolicyValidation,
    summary="Dry run: would the active set with this policy compile?",
    description="Nothing is stored. The policy replaces one of the same name in the candidate set.",
    responses=errors(*BODY_ERRORS),
)
async def validate_policy(policy: Policy, service: ServiceDep, _: Manager) -> PolicyValidation:
    return await service.policies.validate(policy)


@router.get("/policies/{name}", response_model=Policy, summary="Get one policy", responses=errors(404))
async def get_policy(name: str, service: ServiceDep, _: Reader) -> Policy:
    return await service.policies.get_policy(name)


@router.put(
    "/policies/{name}",
    response_model=Policy,
    summary="Create or replace an API policy",
    description="201 when created, 200 when replaced. The body's name must equal the path's.",
    responses=created_or_replaced(Policy, "Replaced: an API policy of that name existed.", 409, *BODY_ERRORS),
)
async def put_policy(name: str, policy: Policy, response: Response, service: ServiceDep, principal: Manager) -> Policy:
    if policy.name != name:
        raise name_mismatch("policy", policy.name, name)
    stored, created = await service.policies.put_policy(policy, by=principal.key_id)
    response.status_code = 201 if created else 200
    return stored


@router.delete(
    "/policies/{name}",
    status_code=204,
    summary="Delete an API policy",
    description="A policy defined in a file → 409 policy_conflict.",
    responses=errors(404, 409, 422),
)
async def delete_policy(name: str, service: ServiceDep, principal: Manager) -> Response:
    await service.policies.delete_policy(name, by=principal.key_id)
    return Response(status_code=204)


__all__ = ["router"]
