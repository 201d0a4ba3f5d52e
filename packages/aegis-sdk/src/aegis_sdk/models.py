"""The wire models of the AEGIS API, v1: one definition shared by the SDK and the server.

Request bodies are pydantic models (users may pass them or plain dicts). The `Decision` the SDK
returns is a dataclass, as the SDK page documents (`dataclasses.is_dataclass(decision)` holds); it is
a pydantic dataclass, so a malformed server answer is caught when it is parsed.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal, cast

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    SerializerFunctionWrapHandler,
    Strict,
    model_serializer,
)
from pydantic.dataclasses import dataclass
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

Outcome = Literal["ALLOW", "DENY", "ESCALATE", "REQUIRE_CONFIRMATION"]
"""A governance outcome. Every outcome is an HTTP 200 answer from the platform."""

OUTCOMES: tuple[Outcome, ...] = ("ALLOW", "DENY", "ESCALATE", "REQUIRE_CONFIRMATION")

ActorType = Literal["ai-agent", "ai-copilot", "automation", "human"]
ACTOR_TYPES: tuple[ActorType, ...] = ("ai-agent", "ai-copilot", "automation", "human")
ReviewStatus = Literal["pending", "approved", "denied", "expired"]
RiskLevel = Literal["low", "medium", "high", "critical"]
ExecutionStatus = Literal["SUCCESS", "FAILED", "PARTIAL"]
PolicyMode = Literal["enforce", "shadow"]
"""`enforce`: the rule decides. `shadow`: the rule is evaluated and what it would have decided is recorded on
the decision (`Decision.shadow`), without changing the outcome."""

DEGRADED_PREFIX = "degraded_"
"""Decision ids that start with this were made locally by a fail-open path, not by the platform."""

_STRICT = ConfigDict(extra="forbid", str_strip_whitespace=False)
_LENIENT = ConfigDict(extra="ignore")


def _not_bool_or_text(value: Any) -> Any:
    if isinstance(value, bool | str | bytes):
        raise ValueError("must be a JSON integer, not a boolean or a string")
    return value


Number = Annotated[float, Strict()]
"""A JSON number in a request: an int or a float, never a boolean (`true` is not 1) nor a numeric string."""
Integer = Annotated[int, BeforeValidator(_not_bool_or_text)]
"""A JSON integer in a request (`3`, or `3.0` as JSON Schema counts it), never a boolean nor a string."""
Flag = Annotated[bool, Strict()]
"""A JSON boolean in a request: `true` or `false`, never `0`/`1` nor `"yes"`."""


# ---------------------------------------------------------------------------------------------
# Proposal (request of POST /api/v1/governance/propose)
# ---------------------------------------------------------------------------------------------


class Actor(BaseModel):
    """Who proposes the action."""

    model_config = _STRICT

    id: str = Field(min_length=1, max_length=256, description="Stable id of the agent, service or person.")
    type: ActorType = Field(default="ai-agent", description="ai-agent, ai-copilot, automation or human.")


class Action(BaseModel):
    """What the actor wants to do: a registered capability and its parameters."""

    model_config = _STRICT

    capability: str = Field(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.:\-]*$",
        description="Registered capability name, e.g. `database.query`.",
    )
    parameters: dict[str, Any] = Field(default_factory=dict)
    resource: str | None = Field(default=None, max_length=1024, description="Optional target resource.")


class Context(BaseModel):
    """Where the action happens: the session and free-form metadata."""

    model_config = _STRICT

    session_id: str | None = Field(default=None, max_length=256)
    metadata: dict[str, Any] = Field(default_factory=dict)


class Proposal(BaseModel):
    """The body of `POST /api/v1/governance/propose`."""

    model_config = _STRICT

    actor: Actor
    action: Action
    context: Context = Field(default_factory=Context)
    confirmation_token: str | None = Field(
        default=None,
        max_length=2048,
        description="Token from a REQUIRE_CONFIRMATION decision or an approved ESCALATE.",
    )


# ---------------------------------------------------------------------------------------------
# Decision (response of propose and of the decision routes)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, config=_LENIENT)
class Review:
    """The review state of an ESCALATE decision."""

    status: ReviewStatus
    reviewer: str | None = None
    note: str | None = None
    resolved_at: str | None = None


@dataclass(frozen=True, config=_LENIENT)
class ShadowOutcome:
    """What a rule in shadow mode would have decided: `outcome` is the decision's outcome had the rule
    `policy_id` been enforced with the rest of the set, `reason` says why."""

    policy_id: str
    outcome: Outcome
    reason: str


@dataclass(frozen=True, config=_LENIENT)
class Decision:
    """A governance decision, as documented on the SDK page plus the contract's extensions."""

    decision_id: str
    outcome: Outcome
    reason: str
    risk_score: Annotated[float, Field(ge=0.0, le=1.0)]
    constraints: dict[str, Any]
    timestamp: str
    audit_ref: str
    policy_ids: list[str] = dataclasses.field(default_factory=list)
    confirmation_token: str | None = None
    expires_at: str | None = None
    review: Review | None = None
    parent_decision_id: str | None = None
    policy_version: int | None = None
    """The policy-set version the decision was made under (None: made before versions were recorded)."""
    shadow: list[ShadowOutcome] = dataclasses.field(default_factory=list)
    """What the matching rules in shadow mode would have decided; empty (absent on the wire) without any."""

    @model_serializer(mode="wrap")
    def _without_empty_shadow(self, serialize: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = serialize(self)
        if not data.get("shadow"):
            data.pop("shadow", None)
        return data

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        # The serializer above only drops an empty `shadow`: document the fields, not a free-form object.
        fields_schema = {key: value for key, value in schema.items() if key != "serialization"}
        return handler(cast(CoreSchema, fields_schema))

    @property
    def allowed(self) -> bool:
        """True when the action may run now."""
        return self.outcome == "ALLOW"

    @property
    def degraded(self) -> bool:
        """True for a decision made locally because the platform could not be reached (fail-open)."""
        return self.decision_id.startswith(DEGRADED_PREFIX)

    def __repr__(self) -> str:
        # Never print the confirmation token: it is a bearer credential for one action.
        token = "<redacted>" if self.confirmation_token else None
        return (
            f"Decision(decision_id={self.decision_id!r}, outcome={self.outcome!r}, reason={self.reason!r}, "
            f"risk_score={self.risk_score!r}, policy_ids={self.policy_ids!r}, confirmation_token={token}, "
            f"review={self.review!r})"
        )


class DecisionPage(BaseModel):
    """One page of `GET /api/v1/governance/decisions`."""

    model_config = _LENIENT

    items: list[Decision]
    next_cursor: str | None = None


class ReviewRequest(BaseModel):
    """The body of `POST /api/v1/governance/decisions/{id}/review`."""

    model_config = _STRICT

    approve: Flag
    note: str | None = Field(default=None, max_length=2000)


class ExecutionError(BaseModel):
    model_config = _STRICT

    code: str = Field(min_length=1, max_length=200)
    message: str = Field(default="", max_length=4000)


class ExecutionReport(BaseModel):
    """The body of `POST /api/v1/governance/decisions/{id}/execution` (AGP-1 EXECUTION_RESULT)."""

    model_config = _STRICT

    status: ExecutionStatus
    result: Any | None = None
    error: ExecutionError | None = None
    duration_ms: Number | None = Field(default=None, ge=0)


class ExecutionRecord(BaseModel):
    """What the platform recorded for an execution report."""

    model_config = _LENIENT

    decision_id: str
    status: ExecutionStatus
    recorded_at: str
    audit_ref: str


# ---------------------------------------------------------------------------------------------
# Registry and policies
# ---------------------------------------------------------------------------------------------


class Capability(BaseModel):
    """A registered capability. Mark a parameter sensitive with `"x-sensitive": true` in its schema:
    the audit then stores a hash of its value, never the value."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.:\-]*$")
    description: str = ""
    risk_level: RiskLevel = "medium"
    parameter_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})


class PolicyRule(BaseModel):
    """One rule: when `capability` (a glob) matches and `condition` (CEL) is true, it votes `outcome`."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, max_length=200, description="Stable id; defaults to the index.")
    capability: str = Field(min_length=1, max_length=200, description="Glob over capability names.")
    condition: str = Field(default="true", max_length=10_000, description="CEL expression.")
    outcome: Outcome
    priority: Integer = Field(default=0, description="Among rules voting the deciding outcome, the highest explains.")
    reason: str | None = Field(default=None, max_length=2000)
    mode: PolicyMode | None = Field(
        default=None, description="shadow: evaluated and recorded, never enforced; None: the policy's mode."
    )
    constraints: dict[str, Any] = Field(default_factory=dict)
    risk: Number | None = Field(default=None, ge=-1.0, le=1.0, description="Adjustment added to the risk score.")
    review_timeout_seconds: Integer | None = Field(
        default=None, gt=0, le=30 * 24 * 3600, description="ESCALATE only: how long a reviewer has."
    )


class Policy(BaseModel):
    """A named, versionable set of rules."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
    description: str = ""
    enabled: Flag = True
    mode: PolicyMode = Field(
        default="enforce", description="shadow: every rule is evaluated and recorded, never enforced."
    )
    rules: list[PolicyRule] = Field(default_factory=list)


class PolicyProblem(BaseModel):
    """One reason a policy set failed to load."""

    model_config = _LENIENT

    message: str
    policy: str | None = None
    rule: str | None = None
    source: str | None = None


class PolicyValidation(BaseModel):
    """The answer of `POST /api/v1/policies/validate`."""

    model_config = _LENIENT

    valid: bool
    errors: list[PolicyProblem] = Field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Audit
# ---------------------------------------------------------------------------------------------


class AuditRecord(BaseModel):
    """One link of the hash-chained audit log."""

    model_config = _LENIENT

    audit_ref: str
    sequence: int
    event_type: str
    decision_id: str | None = None
    actor_id: str | None = None
    capability: str | None = None
    outcome: str | None = None
    session_id: str | None = None
    timestamp: str
    payload: dict[str, Any] = Field(default_factory=dict)
    previous_hash: str
    hash: str


class AuditPage(BaseModel):
    """One page of `GET /api/v1/audit/log`."""

    model_config = _LENIENT

    items: list[AuditRecord]
    next_cursor: str | None = None


class AuditTrail(BaseModel):
    """Every audit record of one decision (proposal, decision, review, confirmation, execution)."""

    model_config = _LENIENT

    decision_id: str
    records: list[AuditRecord]


class BrokenLink(BaseModel):
    model_config = _LENIENT

    sequence: int
    audit_ref: str | None = None
    reason: str


class AuditProblem(BaseModel):
    """One thing wrong with the audit trail, besides a broken link: e.g. `tail_cut`, `chain_recomputed`,
    `checkpoint_signature_invalid`, `chain_version_downgraded`, `decision_mismatch`,
    `decision_unaudited`, `audit_without_decision` (see docs/api.md)."""

    model_config = _LENIENT

    code: str
    message: str
    sequence: int | None = None
    decision_id: str | None = None


class AuditCheckpoint(BaseModel):
    """The signed checkpoint a verification compared the chain with."""

    model_config = _LENIENT

    sequence: int
    head_hash: str
    time: str
    chain_version: int = 1
    signature_valid: bool = True


class AuditVerification(BaseModel):
    """The answer of `GET /api/v1/audit/verify`. `valid` is false when a link is broken
    (`first_broken`) or anything in `problems` is wrong; `checkpoint` is the signed head the chain was
    compared with (None when there is none yet)."""

    model_config = _LENIENT

    valid: bool
    records_checked: int
    head_hash: str | None = None
    first_broken: BrokenLink | None = None
    head_sequence: int | None = None
    chain_version: int | None = None
    keyed_from: int | None = None
    checkpoint: AuditCheckpoint | None = None
    problems: list[AuditProblem] = Field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Errors and health
# ---------------------------------------------------------------------------------------------

ErrorType = Literal[
    "validation_error",
    "governance_error",
    "authentication_error",
    "permission_error",
    "not_found",
    "rate_limit_error",
    "server_error",
]


class ErrorBody(BaseModel):
    model_config = _LENIENT

    type: ErrorType
    code: str
    message: str
    request_id: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorEnvelope(BaseModel):
    """Every non-2xx answer of the platform: `{"error": {...}}`."""

    model_config = _LENIENT

    error: ErrorBody


# ---------------------------------------------------------------------------------------------
# Execution batches (after ErrorBody, which their results carry)
# ---------------------------------------------------------------------------------------------


MAX_EXECUTION_BATCH = 100
"""The most execution reports one `POST /api/v1/governance/executions/batch` may carry."""


class ExecutionBatchItem(ExecutionReport):
    """One report of an execution batch: an `ExecutionReport` and the decision it is about."""

    decision_id: str = Field(min_length=1, max_length=200)


class ExecutionBatch(BaseModel):
    """The body of `POST /api/v1/governance/executions/batch`: 1..100 execution reports."""

    model_config = _STRICT

    reports: list[ExecutionBatchItem] = Field(min_length=1, max_length=MAX_EXECUTION_BATCH)


ExecutionBatchStatus = Literal["recorded", "duplicate", "error"]


class ExecutionBatchResult(BaseModel):
    """The answer for one report of a batch, in the batch's order: `recorded` (with `execution`),
    `duplicate` (the same status was already recorded: `execution` is the stored record) or `error` (`error`
    is what the single endpoint would have answered: `not_found`, `not_proposer`, `not_allowed`,
    `already_reported` with another status, `invalid_result`)."""

    model_config = _LENIENT

    decision_id: str
    status: ExecutionBatchStatus
    execution: ExecutionRecord | None = None
    error: ErrorBody | None = None


class ExecutionBatchAnswer(BaseModel):
    """The answer of `POST /api/v1/governance/executions/batch`: one result per report, in order."""

    model_config = _LENIENT

    results: list[ExecutionBatchResult]


# ---------------------------------------------------------------------------------------------
# API keys (`/api/v1/keys`, scope admin)
# ---------------------------------------------------------------------------------------------

_MAX_KEY_RATE = 10_000_000


class ApiKeyCreate(BaseModel):
    """The body of `POST /api/v1/keys`. `actors` (globs over `actor.id`, optionally `type:id-glob`; `*` for
    any actor) is required for a key with `governance:propose` or `admin`. `rate_limit_per_minute`: the
    key's own limit (None: the server-wide one; 0: none)."""

    model_config = _STRICT

    name: str = Field(min_length=1, max_length=200)
    scopes: list[str] = Field(min_length=1, max_length=10)
    actors: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(default=None, max_length=100)
    rate_limit_per_minute: Integer | None = Field(default=None, ge=0, le=_MAX_KEY_RATE)


class ApiKeyUpdate(BaseModel):
    """The body of `PATCH /api/v1/keys/{key_id}`: only the fields sent change; `rate_limit_per_minute: null`
    returns the key to the server-wide limit."""

    model_config = _STRICT

    actors: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(default=None, max_length=100)
    rate_limit_per_minute: Integer | None = Field(default=None, ge=0, le=_MAX_KEY_RATE)


class ApiKeyInfo(BaseModel):
    """An API key as the keys API shows it: never the key itself, nor its hash. `actors` None: a key made
    before 0.2, bound to no actor (`bound` false) until updated."""

    model_config = _LENIENT

    key_id: str
    name: str
    scopes: list[str]
    actors: list[str] | None = None
    bound: bool = False
    rate_limit_per_minute: int | None = None
    status: Literal["active", "revoked"] = "active"
    created_at: str
    revoked_at: str | None = None


class ApiKeyCreated(ApiKeyInfo):
    """The answer of `POST /api/v1/keys`: the key's record and the key itself, shown this once."""

    api_key: str


class ApiKeyList(BaseModel):
    """The answer of `GET /api/v1/keys`: every key, revoked ones included, oldest first."""

    model_config = _LENIENT

    items: list[ApiKeyInfo]


class Health(BaseModel):
    model_config = _LENIENT

    status: str
    version: str | None = None
    checks: dict[str, Any] = Field(default_factory=dict)


__all__ = [
    "ACTOR_TYPES",
    "MAX_EXECUTION_BATCH",
    "OUTCOMES",
    "Action",
    "Actor",
    "ActorType",
    "ApiKeyCreate",
    "ApiKeyCreated",
    "ApiKeyInfo",
    "ApiKeyList",
    "ApiKeyUpdate",
    "AuditCheckpoint",
    "AuditPage",
    "AuditProblem",
    "AuditRecord",
    "AuditTrail",
    "AuditVerification",
    "BrokenLink",
    "Capability",
    "Context",
    "Decision",
    "DecisionPage",
    "ErrorBody",
    "ErrorEnvelope",
    "ErrorType",
    "ExecutionBatch",
    "ExecutionBatchAnswer",
    "ExecutionBatchItem",
    "ExecutionBatchResult",
    "ExecutionBatchStatus",
    "ExecutionError",
    "ExecutionRecord",
    "ExecutionReport",
    "ExecutionStatus",
    "Health",
    "Outcome",
    "Policy",
    "PolicyMode",
    "PolicyProblem",
    "PolicyRule",
    "PolicyValidation",
    "Proposal",
    "Review",
    "ReviewRequest",
    "ReviewStatus",
    "RiskLevel",
    "ShadowOutcome",
]
