"""Governance orchestration: idempotency → confirmation token or engine → store, plus reviews, executions,
the policy set (files + API, compiled into one and swapped atomically) and the audit reads.

The routers stay thin: every rule of the contract lives here, in terms of the store and the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import time
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from aegis_sdk.models import (
    AuditPage,
    AuditTrail,
    AuditVerification,
    Capability,
    Decision,
    DecisionPage,
    ExecutionRecord,
    ExecutionReport,
    Policy,
    PolicyProblem,
    PolicyValidation,
    Proposal,
    Review,
    ReviewRequest,
)
from aegis_server.audit.anchor import AuditAnchor
from aegis_server.audit.verification import verify_audit
from aegis_server.canonical import canonical_json, normalise_json
from aegis_server.engine import (
    EngineConfig,
    ParameterSchemaError,
    PolicySet,
    PolicySetError,
    UnknownCapabilityError,
    compile_policy_set,
    evaluate,
    keyed_digest,
    value_key_from_secret,
)
from aegis_server.errors import ApiError, governance_error, not_found, validation_error
from aegis_server.ids import new_audit_ref, new_id
from aegis_server.metrics import Metrics
from aegis_server.policy_files import load_policy_paths
from aegis_server.security import Principal
from aegis_server.settings import Settings
from aegis_server.store import (
    AlreadyReported,
    AuditFilters,
    DecisionBinding,
    DecisionFilters,
    IdempotencyConflict,
    IdempotencyEntry,
    InvalidCursor,
    NewDecision,
    NotAllowed,
    NotFound,
    NotPending,
    NotProposer,
    Store,
    TokenAlreadyUsed,
)
from aegis_server.store.probe import StorageHealth
from aegis_server.tokens import TokenSigner

logger = logging.getLogger("aegis_server.service")
_SAFE_ACTOR_ID = re.compile(r"[A-Za-z0-9._@+-]+")
_DECISION_JSON: TypeAdapter[Decision] = TypeAdapter(Decision)

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class DecisionQuery:
    actor_id: str | None = None
    capability: str | None = None
    outcome: str | None = None
    session_id: str | None = None
    review_status: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class AuditQuery:
    actor_id: str | None = None
    capability: str | None = None
    outcome: str | None = None
    session_id: str | None = None
    decision_id: str | None = None
    event_type: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _proposal_audit(
    proposal: Proposal, parameters: Mapping[str, Any] | None, params_hash: str, api_key_id: str
) -> dict[str, Any]:
    """The proposal as the audit keeps it: sensitive parameters already hashed by the engine, and the id of
    the API key that proposed it. A confirmed resubmission keeps only the parameters hash (its parent's
    record holds the redacted parameters)."""
    action: dict[str, Any] = {"capability": proposal.action.capability, "params_hash": params_hash}
    if parameters is not None:
        action["parameters"] = dict(parameters)
    if proposal.action.resource is not None:
        action["resource"] = proposal.action.resource
    return {
        "actor": {"id": proposal.actor.id, "type": proposal.actor.type},
        "action": action,
        "context": {"session_id": proposal.context.session_id, "metadata": dict(proposal.context.metadata)},
        "confirmation": proposal.confirmation_token is not None,
        "api_key_id": api_key_id,
    }


def _same_person(first: str | None, second: str | None) -> bool:
    """Names that a person could not tell apart: the same after Unicode compatibility normalisation (NFKC),
    case folding and trimming (`Support-Bot-1 ` is `support-bot-1`)."""
    if first is None or second is None:
        return False
    return _person_key(first) == _person_key(second)


def _person_key(name: str) -> str:
    return unicodedata.normalize("NFKC", name).casefold().strip()


def _confirmable(decision: Decision) -> bool:
    """Whether a confirmation token may turn this decision into an ALLOW."""
    if decision.outcome == "REQUIRE_CONFIRMATION":
        return True
    return decision.outcome == "ESCALATE" and decision.review is not None and decision.review.status == "approved"


def _is_pending(decision: Decision) -> bool:
    return decision.review is not None and decision.review.status == "pending"


class ReviewNotifier:
    """In-process wake-ups for long polls: the review and expiry paths of this process notify waiters.
    Waiters also re-check the store periodically, so a review on another replica is seen too."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Event]] = {}

    def subscribe(self, decision_id: str) -> asyncio.Event:
        event = asyncio.Event()
        self._waiters.setdefault(decision_id, set()).add(event)
        return event

    def unsubscribe(self, decision_id: str, event: asyncio.Event) -> None:
        waiters = self._waiters.get(decision_id)
        if waiters is not None:
            waiters.discard(event)
            if not waiters:
                del self._waiters[decision_id]

    def notify(self, decision_id: str) -> None:
        for event in self._waiters.get(decision_id, ()):
            event.set()

    @property
    def waiting(self) -> int:
        return sum(len(w) for w in self._waiters.values())


# ---------------------------------------------------------------------------------------------
# Policies: files + API, one compiled set
# ---------------------------------------------------------------------------------------------

_API_SOURCE = "api"


class PolicyManager:
    """Owns the active PolicySet. File-defined items are read-only through the API; API-defined ones
    live in the store. Any change recompiles the whole set and swaps it only if it compiles."""

    def __init__(
        self,
        store: Store,
        paths: Sequence[Path],
        metrics: Metrics,
        *,
        refresh_interval: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._paths = tuple(paths)
        self._metrics = metrics
        self._refresh_interval = refresh_interval
        self._monotonic = monotonic
        self._lock = asyncio.Lock()
        self._file_policies: dict[str, Policy] = {}
        self._file_capabilities: dict[str, Capability] = {}
        self._file_sources: dict[str, str] = {}
        self._api_policies: dict[str, Policy] = {}
        self._api_capabilities: dict[str, Capability] = {}
        self._active: PolicySet | None = None
        self._version: str | None = None
        self._last_check = float("-inf")

    @property
    def active(self) -> PolicySet:
        if self._active is None:
            raise ApiError(503, "server_error", "unavailable", "The policy set is not loaded yet; retry shortly.")
        return self._active

    @property
    def loaded(self) -> bool:
        return self._active is not None

    @property
    def paths(self) -> tuple[Path, ...]:
        return self._paths

    async def load(self) -> None:
        """Read the files and the stored items and compile them; raises PolicySetError if they do not."""
        documents = load_policy_paths(self._paths)
        self._file_policies = {p.name: p for p in documents.policies}
        self._file_capabilities = {c.name: c for c in documents.capabilities}
        self._file_sources = dict(documents.sources)
        async with self._lock:
            await self._reload_from_store()

    async def _reload_from_store(self) -> None:
        version = await self._store.policy_version()
        policies = {p.name: p for p in await self._store.list_policies()}
        capabilities = {c.name: c for c in await self._store.list_capabilities()}
        for name in set(policies) & set(self._file_policies):
            logger.warning("stored policy %r is shadowed by the policy file that defines it", name)
            del policies[name]
        for name in set(capabilities) & set(self._file_capabilities):
            logger.warning("stored capability %r is shadowed by the policy file that defines it", name)
            del capabilities[name]
        compiled = self._compile(policies, capabilities)
        self._api_policies, self._api_capabilities = policies, capabilities
        self._swap(compiled)
        self._version = version
        self._last_check = self._monotonic()

    def _swap(self, compiled: PolicySet) -> None:
        self._active = compiled
        self._metrics.policy_rules.set(compiled.rule_count)

    def _compile(self, api_policies: Mapping[str, Policy], api_capabilities: Mapping[str, Capability]) -> PolicySet:
        policies = [*self._file_policies.values(), *api_policies.values()]
        capabilities = [*self._file_capabilities.values(), *api_capabilities.values()]
        sources = dict(self._file_sources)
        for name in api_policies:
            sources.setdefault(name, _API_SOURCE)
        for name in api_capabilities:
            sources.setdefault(f"capability:{name}", _API_SOURCE)
        return compile_policy_set(policies, capabilities, sources=sources)

    async def maybe_refresh(self) -> None:
        """Pick up changes made by other replicas: a cheap version check at most once per interval."""
        if self._monotonic() - self._last_check < self._refresh_interval:
            return
        self._last_check = self._monotonic()
        version = await self._store.policy_version()
        if version == self._version:
            return
        async with self._lock:
            try:
                await self._reload_from_store()
            except PolicySetError as exc:
                # Another replica stored a set we cannot compile (e.g. different engine version): keep ours.
                logger.error("the stored policy set does not compile here; keeping the active set: %s", exc)
                self._version = version

    # -- reads ------------------------------------------------------------------------------------

    async def list_policies(self) -> list[Policy]:
        await self.maybe_refresh()
        merged = {**self._api_policies, **self._file_policies}
        return [merged[name] for name in sorted(merged)]

    async def get_policy(self, name: str) -> Policy:
        await self.maybe_refresh()
        policy = self._file_policies.get(name) or self._api_policies.get(name)
        if policy is None:
            raise not_found("policy", name)
        return policy

    async def list_capabilities(self) -> list[Capability]:
        await self.maybe_refresh()
        merged = {**self._api_capabilities, **self._file_capabilities}
        return [merged[name] for name in sorted(merged)]

    async def get_capability(self, name: str) -> Capability:
        await self.maybe_refresh()
        capability = self._file_capabilities.get(name) or self._api_capabilities.get(name)
        if capability is None:
            raise not_found("capability", name)
        return capability

    # -- writes -----------------------------------------------------------------------------------

    def _file_conflict(self, kind: str, name: str) -> ApiError:
        key = f"capability:{name}" if kind == "capability" else name
        source = self._file_sources.get(key, "a policy file")
        return governance_error(
            409,
            "policy_conflict",
            f"The {kind} {name!r} is defined in {source}; what a policy file defines cannot be changed through the "
            f"API. Edit the file and restart the server, or use another name.",
            {"name": name, "source": source},
        )

    @staticmethod
    def _invalid(exc: PolicySetError) -> ApiError:
        problems = [p.model_dump() for p in exc.problems]
        first = exc.problems[0].message if exc.problems else "the set does not compile"
        return governance_error(
            422,
            "invalid_policy",
            f"The policy set would not compile ({len(problems)} problem(s); first: {first}). Nothing was "
            "changed; fix the problems listed in details.errors.",
            {"errors": problems},
        )

    async def _refresh_locked(self) -> None:
        version = await self._store.policy_version()
        if version != self._version:
            await self._reload_from_store()

    async def put_capability(self, capability: Capability) -> tuple[Capability, bool]:
        if capability.name in self._file_capabilities:
            raise self._file_conflict("capability", capability.name)
        async with self._lock:
            await self._refresh_locked()
            candidate = {**self._api_capabilities, capability.name: capability}
            try:
                compiled = self._compile(self._api_policies, candidate)
            except PolicySetError as exc:
                raise self._invalid(exc) from None
            created = capability.name not in self._api_capabilities
            await self._store.put_capability(capability)
            self._api_capabilities = candidate
            self._swap(compiled)
            self._version = await self._store.policy_version()
            return capability, created

    async def create_policy(self, policy: Policy) -> Policy:
        if policy.name in self._file_policies:
            raise self._file_conflict("policy", policy.name)
        async with self._lock:
            await self._refresh_locked()
            if policy.name in self._api_policies:
                raise governance_error(
                    409,
                    "policy_conflict",
                    f"A policy named {policy.name!r} exists. Replace it with PUT /api/v1/policies/{policy.name}, "
                    "or choose another name.",
                    {"name": policy.name, "source": _API_SOURCE},
                )
            await self._apply_policy(policy)
            return policy

    async def put_policy(self, policy: Policy) -> tuple[Policy, bool]:
        if policy.name in self._file_policies:
            raise self._file_conflict("policy", policy.name)
        async with self._lock:
            await self._refresh_locked()
            created = policy.name not in self._api_policies
            await self._apply_policy(policy)
            return policy, created

    async def _apply_policy(self, policy: Policy) -> None:
        candidate = {**self._api_policies, policy.name: policy}
        try:
            compiled = self._compile(candidate, self._api_capabilities)
        except PolicySetError as exc:
            raise self._invalid(exc) from None
        await self._store.put_policy(policy)
        self._api_policies = candidate
        self._swap(compiled)
        self._version = await self._store.policy_version()

    async def delete_policy(self, name: str) -> None:
        if name in self._file_policies:
            raise self._file_conflict("policy", name)
        async with self._lock:
            await self._refresh_locked()
            if name not in self._api_policies:
                raise not_found("policy", name)
            candidate = {k: v for k, v in self._api_policies.items() if k != name}
            try:
                compiled = self._compile(candidate, self._api_capabilities)
            except PolicySetError as exc:
                raise self._invalid(exc) from None
            await self._store.delete_policy(name)
            self._api_policies = candidate
            self._swap(compiled)
            self._version = await self._store.policy_version()

    async def validate(self, policy: Policy) -> PolicyValidation:
        if policy.name in self._file_policies:
            problem = PolicyProblem(
                message="a policy of this name is defined in a file and cannot be replaced through the API",
                policy=policy.name,
                source=self._file_sources.get(policy.name),
            )
            return PolicyValidation(valid=False, errors=[problem])
        await self.maybe_refresh()
        try:
            self._compile({**self._api_policies, policy.name: policy}, self._api_capabilities)
        except PolicySetError as exc:
            return PolicyValidation(valid=False, errors=list(exc.problems))
        return PolicyValidation(valid=True)


# ---------------------------------------------------------------------------------------------
# The governance service
# ---------------------------------------------------------------------------------------------


class GovernanceService:
    """Everything the routers do, with the store, the engine, the token signer and the metrics."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        metrics: Metrics,
        *,
        clock: Clock = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.store = store
        self.storage = StorageHealth(store, monotonic=monotonic)  # readiness: can the store write?
        self.metrics = metrics
        self.clock = clock
        self.notifier = ReviewNotifier()
        self.audit_anchor: AuditAnchor | None = None  # the lifespan's checkpoints (None: nothing anchored)
        self.engine_config = EngineConfig(
            escalate_threshold=settings.escalate_threshold,
            default_review_timeout_seconds=settings.default_review_timeout_seconds,
            condition_cost_budget=settings.condition_cost_budget,
        )
        self.policies = PolicyManager(
            store,
            settings.resolved_policy_paths(),
            metrics,
            refresh_interval=settings.policy_refresh_interval_seconds,
            monotonic=monotonic,
        )
        self._signer: TokenSigner | None = None
        self._value_key: bytes | None = None

    async def start(self) -> None:
        """Prepare the token signer and load the policy set (raises PolicySetError if it does not compile)."""
        await self.init_tokens()
        await self.policies.load()

    async def init_tokens(self) -> None:
        """The token secret: `settings.secret`, else the one kept in the store (made on first start)."""
        secret = self.settings.token_secret()
        if secret is None:
            secret = await self.store.get_or_create_secret()
        self._signer = TokenSigner(secret)
        # Sensitive values, params_hash and the idempotency request_hash are keyed (HMAC) with a key
        # derived from the secret: a bare SHA-256 of a small value (a card number) is reversed by guessing.
        self._value_key = value_key_from_secret(secret)
        self.engine_config = dataclasses.replace(self.engine_config, value_key=self._value_key)

    @property
    def signer(self) -> TokenSigner:
        if self._signer is None:
            raise ApiError(503, "server_error", "unavailable", "The server is starting; retry shortly.")
        return self._signer

    # -- propose ----------------------------------------------------------------------------------

    async def propose(
        self, proposal: Proposal, *, principal: Principal, idempotency_key: str | None
    ) -> tuple[Decision, bool]:
        """Decide one proposal. Returns (decision, replayed) — replayed for a repeated Idempotency-Key.
        Refuses (403 actor_not_allowed, audited) a proposal whose actor is outside the key's patterns,
        before anything else: a confirmation-token resubmission or an idempotent retry included."""
        started = time.perf_counter()
        principal_key_id = principal.key_id
        if not principal.actors.allows(proposal.actor.id, proposal.actor.type):
            await self._refuse_actor(proposal, principal)
        params = proposal.action.parameters
        try:
            params_bytes = canonical_json(params)
        except (TypeError, ValueError) as exc:
            self.metrics.rejected.labels(code="invalid_parameters").inc()
            raise governance_error(
                422,
                "invalid_parameters",
                f"The parameters cannot be canonicalised: {exc}.",
                {"field": "(root)", "errors": [{"field": "(root)", "message": str(exc), "validator": "canonical"}]},
            ) from None
        if len(params_bytes) > self.settings.max_parameters_bytes:
            self.metrics.rejected.labels(code="parameters_too_large").inc()
            raise validation_error(
                422,
                "parameters_too_large",
                f"action.parameters is {len(params_bytes)} bytes in canonical JSON; the limit is "
                f"{self.settings.max_parameters_bytes}. Pass references (ids, URLs) instead of large values.",
                {"size": len(params_bytes), "max_bytes": self.settings.max_parameters_bytes},
            )
        value_key = self._value_key
        if value_key is None:
            raise ApiError(503, "server_error", "unavailable", "The server is starting; retry shortly.")
        params_hash = keyed_digest(value_key, params_bytes)
        idempotency: IdempotencyEntry | None = None
        request_hash = ""  # only an Idempotency-Key needs the hash of the whole request
        if idempotency_key:
            request_hash = keyed_digest(value_key, canonical_json(proposal.model_dump(mode="json")))
            replay = await self._idempotent_replay(principal_key_id, idempotency_key, request_hash)
            if replay is not None:
                return replay, True
            idempotency = IdempotencyEntry(principal_key_id, idempotency_key, request_hash)

        await self.policies.maybe_refresh()
        now = self.clock()
        try:
            if proposal.confirmation_token:
                decision = await self._confirm(proposal, params_hash, idempotency, now, principal_key_id)
            else:
                decision = await self._decide(proposal, params_hash, idempotency, now, principal_key_id)
        except IdempotencyConflict:
            # Another request with the same key won the race: answer as a retry would be answered.
            assert idempotency is not None
            replay = await self._idempotent_replay(principal_key_id, idempotency_key or "", request_hash)
            if replay is None:
                raise
            return replay, True
        self.metrics.decisions.labels(outcome=decision.outcome).inc()
        self.metrics.decision_latency.observe(time.perf_counter() - started)
        return decision, False

    async def _idempotent_replay(self, api_key_id: str, key: str, request_hash: str) -> Decision | None:
        found = await self.store.find_idempotent(api_key_id, key)
        if found is None:
            return None
        stored_hash, decision = found
        if stored_hash != request_hash:
            self.metrics.rejected.labels(code="idempotency_conflict").inc()
            raise governance_error(
                409,
                "idempotency_conflict",
                "This Idempotency-Key was already used with a different request. Use a new key for a new "
                "proposal; reuse a key only to retry the very same request.",
                {"decision_id": decision.decision_id},
            )
        return decision

    async def _record(self, record: NewDecision) -> Decision:
        try:
            return await self.store.record_decision(record)
        except (IdempotencyConflict, TokenAlreadyUsed):
            raise
        except Exception:
            self.metrics.audit_failures.inc()
            raise

    async def _refuse_actor(self, proposal: Proposal, principal: Principal) -> None:
        """Audit and raise the 403 actor_not_allowed of a proposal outside the key's actor patterns."""
        actor = proposal.actor
        bound = principal.actors.bound
        await self._audit_rejection(
            proposal,
            "actor_not_allowed",
            {"actor_type": actor.type, "key_bound": bound},
            principal.key_id,
            event_type="proposal_rejected",
        )
        # The actor id is the caller's text: put it into the suggested command only when it cannot change it.
        safe = len(actor.id) <= 100 and _SAFE_ACTOR_ID.fullmatch(actor.id) is not None
        example = f"--actors '{actor.type}:{actor.id}'" if safe else "--actors 'ai-agent:support-bot-*'"
        if bound:
            message = (
                f"The API key {principal.name!r} ({principal.key_id}) may not propose for the actor "
                f"{actor.type}:{actor.id[:100]!r}; its actor patterns are "
                f"{', '.join(principal.actors.patterns or ())}. Propose with a key bound to this actor, or have an "
                f"admin widen this key's patterns: `aegis-server keys update {principal.key_id} {example}` (or "
                f"PATCH /api/v1/keys/{principal.key_id})."
            )
        else:
            message = (
                f"The API key {principal.name!r} ({principal.key_id}) is bound to no actor (it was made before "
                f"keys were bound to actors, in 0.1), so it may not propose. An admin binds it with "
                f"`aegis-server keys update {principal.key_id} {example}` (or '*' for any actor), or PATCH "
                f"/api/v1/keys/{principal.key_id}."
            )
        raise governance_error(
            403,
            "actor_not_allowed",
            message,
            {
                "api_key_id": principal.key_id,
                "actor": {"id": actor.id, "type": actor.type},
                "allowed_actors": list(principal.actors.patterns or ()),
            },
        )

    async def _audit_rejection(
        self,
        proposal: Proposal,
        code: str,
        payload: dict[str, Any],
        api_key_id: str,
        *,
        event_type: str | None = None,
    ) -> None:
        if event_type is None:
            event_type = "proposal_rejected" if not proposal.confirmation_token else "confirmation_rejected"
        await self._audit_refusal(
            event_type,
            code,
            decision_id=payload.get("parent_decision_id"),
            actor_id=proposal.actor.id,
            capability=proposal.action.capability,
            session_id=proposal.context.session_id,
            payload={**payload, "api_key_id": api_key_id},
        )

    async def _audit_refusal(self, event_type: str, code: str, *, payload: dict[str, Any], **fields: Any) -> None:
        """Write the audit record of a refusal (`payload` gains the `code`) and count it; a refusal that
        cannot be audited is not answered (the store's error propagates, counted as an audit failure)."""
        try:
            await self.store.append_audit(event_type, payload={"code": code, **payload}, **fields)
        except Exception:
            self.metrics.audit_failures.inc()
            raise
        self.metrics.rejected.labels(code=code).inc()

    async def _decide(
        self,
        proposal: Proposal,
        params_hash: str,
        idempotency: IdempotencyEntry | None,
        now: datetime,
        api_key_id: str,
    ) -> Decision:
        policy_set = self.policies.active
        try:
            evaluation = evaluate(proposal, policy_set, now=now, config=self.engine_config)
        except UnknownCapabilityError as exc:
            await self._audit_rejection(
                proposal,
                "unknown_capability",
                {"params_hash": params_hash, "suggestions": exc.suggestions},
                api_key_id,
            )
            hint = (
                "Did you mean " + " or ".join(repr(s) for s in exc.suggestions) + "?"
                if exc.suggestions
                else "Register it (policy file or POST /api/v1/capabilities) or check the spelling."
            )
            raise governance_error(
                404,
                "unknown_capability",
                f"Unknown capability {exc.name!r}. {hint}",
                {"capability": exc.name, "suggestions": exc.suggestions},
            ) from None
        except ParameterSchemaError as exc:
            await self._audit_rejection(
                proposal, "invalid_parameters", {"params_hash": params_hash, "field": exc.field}, api_key_id
            )
            raise governance_error(
                422,
                "invalid_parameters",
                f"Invalid parameters for {exc.capability!r}: {exc.field}: "
                f"{exc.errors[0]['message'] if exc.errors else 'does not match the schema'}. Fix the parameters "
                "to match the capability's parameter_schema (GET /api/v1/capabilities/{name}).",
                {"capability": exc.capability, "field": exc.field, "errors": exc.errors},
            ) from None

        decision_id = new_id("dec_")
        token: str | None = None
        token_expires: datetime | None = None
        expires_at: str | None = None
        review: Review | None = None
        review_deadline: datetime | None = None
        if evaluation.outcome == "REQUIRE_CONFIRMATION":
            token_expires = (now + timedelta(seconds=self.settings.confirmation_ttl_seconds)).replace(microsecond=0)
            token = self.signer.issue(
                decision_id=decision_id,
                actor_id=proposal.actor.id,
                capability=proposal.action.capability,
                params_hash=params_hash,
                expires_at=token_expires,
            )
            expires_at = _iso(token_expires)
        elif evaluation.outcome == "ESCALATE":
            timeout = evaluation.review_timeout_seconds or self.settings.default_review_timeout_seconds
            review_deadline = now + timedelta(seconds=timeout)
            expires_at = _iso(review_deadline)
            review = Review(status="pending")
        decision = Decision(
            decision_id=decision_id,
            outcome=evaluation.outcome,
            reason=evaluation.reason,
            risk_score=evaluation.risk_score,
            constraints=normalise_json(evaluation.constraints),  # as stored, so the store answers with it
            timestamp=_iso(now),
            audit_ref=new_audit_ref(),
            policy_ids=list(evaluation.policy_ids),
            confirmation_token=token,
            expires_at=expires_at,
            review=review,
        )
        return await self._record(
            NewDecision(
                decision=decision,
                actor_id=proposal.actor.id,
                actor_type=proposal.actor.type,
                capability=proposal.action.capability,
                session_id=proposal.context.session_id,
                params_hash=params_hash,
                proposal_audit=_proposal_audit(proposal, evaluation.audit_parameters, params_hash, api_key_id),
                created_at=now,
                token_expires_at=token_expires,
                review_deadline=review_deadline,
                idempotency=idempotency,
                api_key_id=api_key_id,
            )
        )

    async def _confirm(
        self,
        proposal: Proposal,
        params_hash: str,
        idempotency: IdempotencyEntry | None,
        now: datetime,
        api_key_id: str,
    ) -> Decision:
        token = proposal.confirmation_token or ""
        claims = TokenSigner.parse(token)
        binding = await self.store.get_decision_binding(claims.decision_id) if claims is not None else None
        if (
            claims is None
            or binding is None
            or not self.signer.verify(
                claims, actor_id=binding.actor_id, capability=binding.capability, params_hash=binding.params_hash
            )
        ):
            await self._audit_rejection(proposal, "confirmation_invalid", {"params_hash": params_hash}, api_key_id)
            raise governance_error(
                409,
                "confirmation_invalid",
                "The confirmation token was not issued by this platform (or is damaged). Resubmit with the "
                "token exactly as it came in the decision, or propose again without one.",
            )
        parent_id = claims.decision_id
        if binding.token_used:
            await self._reject_token(proposal, "confirmation_used", parent_id, params_hash, api_key_id)
        mismatched = [
            name
            for name, same in (
                ("actor", binding.actor_id == proposal.actor.id),
                ("capability", binding.capability == proposal.action.capability),
                ("parameters", binding.params_hash == params_hash),
                # A token works only for the API key whose proposal earned it: another key that learns it
                # (GET /decisions needs only governance:read) cannot spend it.
                ("api_key", binding.api_key_id in (None, api_key_id)),
            )
            if not same
        ]
        if mismatched:
            await self._reject_token(proposal, "confirmation_mismatch", parent_id, params_hash, api_key_id, mismatched)
        if now >= claims.expires_at:
            await self._reject_token(proposal, "confirmation_expired", parent_id, params_hash, api_key_id)

        parent = await self.store.get_decision(parent_id)
        if parent is None:  # the binding exists, so the decision does too; be strict anyway
            raise not_found("decision", parent_id)
        if not _confirmable(parent):
            # A token is only ever issued for these; one for another decision was minted with the secret.
            state = parent.outcome + (f" (review {parent.review.status})" if parent.review is not None else "")
            await self._audit_rejection(
                proposal,
                "confirmation_invalid",
                {"parent_decision_id": parent_id, "params_hash": params_hash, "parent_state": state},
                api_key_id,
            )
            raise governance_error(
                409,
                "confirmation_invalid",
                f"Decision {parent_id} is {state}: only a REQUIRE_CONFIRMATION decision or an approved ESCALATE "
                "can be confirmed. Propose again to get a new decision.",
                {"parent_decision_id": parent_id},
            )
        how = (
            f"approved by {parent.review.reviewer}"
            if parent.review is not None and parent.review.reviewer
            else "confirmed with its token"
        )
        decision = Decision(
            decision_id=new_id("dec_"),
            outcome="ALLOW",
            reason=f"Decision {parent_id} was {how}. Original decision: {parent.reason}",
            risk_score=parent.risk_score,
            constraints=dict(parent.constraints),
            timestamp=_iso(now),
            audit_ref="",
            policy_ids=list(parent.policy_ids),
            parent_decision_id=parent_id,
        )
        try:
            return await self._record(
                NewDecision(
                    decision=decision,
                    actor_id=proposal.actor.id,
                    actor_type=proposal.actor.type,
                    capability=proposal.action.capability,
                    session_id=proposal.context.session_id,
                    params_hash=params_hash,
                    proposal_audit=_proposal_audit(proposal, None, params_hash, api_key_id),
                    created_at=now,
                    idempotency=idempotency,
                    consumes_token_of=parent_id,
                    api_key_id=api_key_id,
                )
            )
        except TokenAlreadyUsed:
            await self._reject_token(proposal, "confirmation_used", parent_id, params_hash, api_key_id)
            raise  # unreachable: _reject_token raises

    async def _reject_token(
        self,
        proposal: Proposal,
        code: str,
        parent_id: str,
        params_hash: str,
        api_key_id: str,
        mismatched: Sequence[str] = (),
    ) -> None:
        payload: dict[str, Any] = {"parent_decision_id": parent_id, "params_hash": params_hash}
        if mismatched:
            payload["mismatched"] = list(mismatched)
        await self._audit_rejection(proposal, code, payload, api_key_id)
        messages = {
            "confirmation_used": "This confirmation token was already used; a token allows one action. Propose "
            "again to get a new decision.",
            "confirmation_expired": "This confirmation token has expired. Propose again to get a new decision.",
            "confirmation_mismatch": "This confirmation token was issued for a different "
            + ", ".join(mismatched)
            + ". Resubmit exactly the proposal that received the token.",
        }
        details: dict[str, Any] = {"parent_decision_id": parent_id}
        if mismatched:
            details["mismatched"] = list(mismatched)
        raise governance_error(409, code, messages[code], details)

    # -- decisions --------------------------------------------------------------------------------

    async def _load(self, decision_id: str) -> Decision:
        decision = await self.store.get_decision(decision_id)
        if decision is None:
            raise not_found("decision", decision_id)
        if _is_pending(decision):
            deadline = _parse_time(decision.expires_at)
            now = self.clock()
            if deadline is not None and now >= deadline:
                await self.expire_due(now)
                refreshed = await self.store.get_decision(decision_id)
                if refreshed is not None:
                    decision = refreshed
        return decision

    async def get_decision(self, decision_id: str, *, wait: float | None = None) -> Decision:
        decision = await self._load(decision_id)
        budget = min(wait or 0.0, self.settings.max_wait_seconds)
        if budget <= 0 or not _is_pending(decision):
            return decision
        loop = asyncio.get_running_loop()
        give_up = loop.time() + budget
        event = self.notifier.subscribe(decision_id)
        try:
            while True:
                remaining = give_up - loop.time()
                if remaining <= 0:
                    return decision
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        event.wait(), timeout=min(remaining, self.settings.long_poll_recheck_seconds)
                    )
                event.clear()
                decision = await self._load(decision_id)
                if not _is_pending(decision):
                    return decision
        finally:
            self.notifier.unsubscribe(decision_id, event)

    async def list_decisions(self, query: DecisionQuery, *, limit: int, cursor: str | None) -> DecisionPage:
        filters = DecisionFilters(
            actor_id=query.actor_id,
            capability=query.capability,
            outcome=query.outcome,
            session_id=query.session_id,
            review_status=query.review_status,
            since=_aware(query.since),
            until=_aware(query.until),
        )
        try:
            items, next_cursor = await self.store.list_decisions(filters, limit, cursor)
        except InvalidCursor as exc:
            raise validation_error(422, "invalid_request", str(exc), {"field": "cursor"}) from None
        return DecisionPage(items=items, next_cursor=next_cursor)

    async def review(
        self, decision_id: str, request: ReviewRequest, *, reviewer: str, reviewer_key_id: str | None = None
    ) -> Decision:
        """Approve or deny a pending ESCALATE. `reviewer` is recorded (the key's name, or the CLI's
        `--reviewer`); `reviewer_key_id` is the reviewing API key (None: the CLI, which has none).
        Separation of duties (unless `allow_self_review`): the key that proposed the decision, or a reviewer
        named like the decision's actor, gets 403 self_review (audited as "review_rejected")."""
        loaded = await self._load(decision_id)  # 404 for an unknown id; expires an overdue review first
        binding = await self.store.get_decision_binding(decision_id)
        if binding is None:
            raise not_found("decision", decision_id)
        if _is_pending(loaded) and not self.settings.allow_self_review:
            # Only a review that could happen is refused as a self-review; otherwise the 409 below says why not.
            await self._check_separation(binding, reviewer, reviewer_key_id)
        now = self.clock()
        token: str | None = None
        token_expires: datetime | None = None
        if request.approve:
            token_expires = (now + timedelta(seconds=self.settings.confirmation_ttl_seconds)).replace(microsecond=0)
            token = self.signer.issue(
                decision_id=decision_id,
                actor_id=binding.actor_id,
                capability=binding.capability,
                params_hash=binding.params_hash,
                expires_at=token_expires,
            )
        try:
            decision = await self.store.resolve_review(
                decision_id,
                approve=request.approve,
                reviewer=reviewer,
                note=request.note,
                now=now,
                token=token,
                token_expires_at=token_expires,
                reviewer_key_id=reviewer_key_id,
            )
        except NotFound:
            raise not_found("decision", decision_id) from None
        except NotPending as exc:
            if exc.status == "expired":
                self.metrics.reviews.labels(result="expired").inc()
                self.notifier.notify(decision_id)
            details: dict[str, Any] = {"decision_id": decision_id, "status": exc.status}
            current = await self.store.get_decision(decision_id)
            if current is not None and current.review is not None and current.review.reviewer == reviewer:
                # This reviewer resolved it already (e.g. a retry whose first answer was lost on the way):
                # hand back the decision as that first answer had it, so the client can tell.
                details["decision"] = _DECISION_JSON.dump_python(current, mode="json")
            raise governance_error(
                409,
                "not_pending",
                f"Decision {decision_id} is not awaiting review (status: {exc.status}). Only a pending ESCALATE "
                "within its deadline can be approved or denied.",
                details,
            ) from None
        self.metrics.reviews.labels(result="approved" if request.approve else "denied").inc()
        self.notifier.notify(decision_id)
        return decision

    async def _check_separation(self, binding: DecisionBinding, reviewer: str, reviewer_key_id: str | None) -> None:
        """Raise 403 self_review (audited) when the reviewer is the proposer: the same API key, or a reviewer
        name equal to the decision's actor id."""
        if reviewer_key_id is not None and binding.api_key_id == reviewer_key_id:
            why = "proposing_key"
            message = (
                f"Decision {binding.decision_id} was proposed with this API key; the key that proposed an action "
                "may not review it (separation of duties). Review it with another reviewer's key (scope "
                "governance:review)."
            )
        elif _same_person(reviewer, binding.actor_id):
            why = "reviewer_is_actor"
            message = (
                f"The reviewer {reviewer!r} is the actor of decision {binding.decision_id}; an actor may not review "
                "its own action (separation of duties). Have another person review it."
            )
        elif binding.api_key_id is not None and _same_person(reviewer, await self._key_name(binding.api_key_id)):
            why = "reviewer_is_proposer"
            message = (
                f"The reviewer {reviewer!r} has the name of the API key that proposed decision "
                f"{binding.decision_id}; whoever proposed an action may not review it (separation of duties). "
                "Have another person review it."
            )
        else:
            return
        await self._audit_refusal(
            "review_rejected",
            "self_review",
            decision_id=binding.decision_id,
            actor_id=binding.actor_id,
            capability=binding.capability,
            session_id=binding.session_id,
            payload={
                "why": why,
                "reviewer": reviewer,
                "api_key_id": reviewer_key_id,
                "reviewer_via": "api" if reviewer_key_id is not None else "cli",
            },
        )
        raise governance_error(
            403,
            "self_review",
            message + " For development only, AEGIS_ALLOW_SELF_REVIEW=true allows it.",
            {"decision_id": binding.decision_id, "why": why},
        )

    async def _key_name(self, key_id: str) -> str | None:
        api_key = await self.store.get_api_key(key_id)
        return str(api_key.name) if api_key is not None else None

    async def expire_due(self, now: datetime | None = None) -> list[str]:
        """Expire pending reviews past their deadline (final DENY) and wake their waiters."""
        expired = await self.store.expire_due_reviews(now or self.clock())
        for decision_id in expired:
            self.metrics.reviews.labels(result="expired").inc()
            self.notifier.notify(decision_id)
        return expired

    async def report_execution(
        self, decision_id: str, report: ExecutionReport, *, api_key_id: str | None = None
    ) -> ExecutionRecord:
        """Record the execution report of an ALLOW decision. `api_key_id`: the reporting key, which must be
        the one that proposed the decision (403 not_proposer, audited as "execution_rejected"); None skips
        that check (trusted in-process callers)."""
        try:
            return await self.store.record_execution(decision_id, report, self.clock(), api_key_id=api_key_id)
        except NotFound:
            raise not_found("decision", decision_id) from None
        except NotProposer:
            await self._audit_refusal(
                "execution_rejected",
                "not_proposer",
                decision_id=decision_id,
                payload={"api_key_id": api_key_id, "status": report.status},
            )
            raise governance_error(
                403,
                "not_proposer",
                f"Decision {decision_id} was proposed with another API key; only the key that proposed an action "
                "may report how it ran. Report with the proposing key.",
                {"decision_id": decision_id},
            ) from None
        except NotAllowed as exc:
            raise governance_error(
                409,
                "not_allowed",
                f"Decision {decision_id} has outcome {exc.outcome}; nothing may have run. Report executions only "
                "for ALLOW decisions.",
                {"decision_id": decision_id, "outcome": exc.outcome},
            ) from None
        except AlreadyReported:
            stored = await self.store.get_execution(decision_id)
            reported: dict[str, Any] = {"decision_id": decision_id}
            if stored is not None:  # what was recorded, so a retry whose first answer was lost can tell
                reported["execution"] = {
                    "decision_id": decision_id,
                    "status": stored["status"],
                    "recorded_at": stored["recorded_at"],
                    "audit_ref": stored["audit_ref"],
                }
            raise governance_error(
                409,
                "already_reported",
                f"The execution of decision {decision_id} was already reported; it can be reported once.",
                reported,
            ) from None

    # -- audit ------------------------------------------------------------------------------------

    async def audit_log(self, query: AuditQuery, *, limit: int, cursor: str | None) -> AuditPage:
        filters = AuditFilters(
            actor_id=query.actor_id,
            capability=query.capability,
            outcome=query.outcome,
            session_id=query.session_id,
            decision_id=query.decision_id,
            event_type=query.event_type,
            since=_aware(query.since),
            until=_aware(query.until),
        )
        try:
            items, next_cursor = await self.store.audit_log(filters, limit, cursor)
        except InvalidCursor as exc:
            raise validation_error(422, "invalid_request", str(exc), {"field": "cursor"}) from None
        return AuditPage(items=items, next_cursor=next_cursor)

    async def audit_trail(self, decision_id: str) -> AuditTrail:
        records = await self.store.audit_trail(decision_id)
        if not records and await self.store.get_decision(decision_id) is None:
            raise not_found("decision", decision_id)
        return AuditTrail(decision_id=decision_id, records=records)

    async def verify_audit(self) -> AuditVerification:
        """The chain, the latest signed checkpoint and the decisions table (`audit.verification.verify_audit`)."""
        anchor = self.audit_anchor
        checkpoint = await anchor.latest() if anchor is not None else None
        return await verify_audit(
            self.store,
            checkpoint=checkpoint,
            public_key=anchor.public_key if anchor is not None else None,
            checkpoint_directory=anchor.directory.path if anchor is not None else None,
        )

    # -- health -----------------------------------------------------------------------------------

    async def readiness(self) -> dict[str, dict[str, Any]]:
        # The store is ready when it can write (a rolled-back write probe, cached 1 s) and no request met
        # a read-only database or a full disk in the last seconds (see store/probe.py).
        problem = await self.storage.check()
        store_check: dict[str, Any] = {"ok": problem is None}
        if problem is not None:
            store_check.update(cause=problem.cause, message=problem.message)
        checks: dict[str, dict[str, Any]] = {"store": store_check}
        if self.policies.loaded:
            active = self.policies.active
            checks["policies"] = {
                "ok": True,
                "policies": len(active.policies),
                "capabilities": len(active.capabilities),
                "rules": active.rule_count,
                "digest": active.digest,
            }
        else:
            checks["policies"] = {"ok": False}
        return checks


__all__ = [
    "AuditQuery",
    "DecisionQuery",
    "GovernanceService",
    "PolicyManager",
    "ReviewNotifier",
    "utcnow",
]
