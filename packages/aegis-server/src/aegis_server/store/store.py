"""`Store`: the façade the server, the CLI and the tests call. It opens the database and composes the
rooms of the store, each owning one concern:

| attribute       | class               | module            | owns                                              |
| --------------- | ------------------- | ----------------- | ------------------------------------------------- |
| `database`      | `Database`          | `database`        | connections, write transactions, the keyed chain  |
| `api_keys`      | `ApiKeys`           | `keys`            | API keys                                          |
| `settings`      | `ServerSettings`    | `server_settings` | the token secret, the policy revision             |
| `decisions`     | `Decisions`         | `decisions`       | recording and reading decisions                   |
| `group_commit`  | `GroupCommit`       | `group_commit`    | batched decision writes, SQLite WAL checkpoints   |
| `reviews`       | `Reviews`           | `reviews`         | approval, denial and expiry of ESCALATEs          |
| `executions`    | `Executions`        | `executions`      | execution reports                                 |
| `audit`         | `AuditLog`          | `audit_log`       | appending, reading and verifying the chain        |
| `audit_checks`  | `DecisionAuditCheck`| `audit_checks`    | decisions compared with their audit records       |
| `policies`      | `Policies`          | `documents`       | API-managed policies                              |
| `capabilities`  | `Capabilities`      | `documents`       | API-registered capabilities                       |
| `policy_versions` | `PolicyVersions`  | `policy_versions` | every version of the active policy set            |
| `console_sessions` | `ConsoleSessions` | `console_sessions` | the reviewer console's sign-ins                  |
| `review_queue`  | `ReviewQueue`       | `review_queue`    | pending reviews by deadline (the console's inbox) |
| `statistics`    | `Statistics`        | `statistics`      | aggregates of the decisions (the console overview)|
| `webhooks`      | `Webhooks`          | `webhooks`        | webhook endpoints, the outbox's deliveries        |

Each public method of `Store` is a method of one room (`_Delegate`; of the same name, but for the
policies and capabilities, whose rooms share `DocumentTable`): the signature and the docstring live in
the room.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from aegis_sdk.models import AuditVerification
from aegis_server.store.audit_checks import DecisionAuditCheck
from aegis_server.store.audit_log import AuditLog
from aegis_server.store.chain import AuditKeySource
from aegis_server.store.console_sessions import ConsoleSessions
from aegis_server.store.database import Database
from aegis_server.store.decisions import Decisions
from aegis_server.store.documents import Capabilities, Policies
from aegis_server.store.engine import create_engine, redact_url, sqlite_batch_writer
from aegis_server.store.errors import SchemaNotReady
from aegis_server.store.executions import Executions
from aegis_server.store.group_commit import GroupCommit
from aegis_server.store.idempotency import IdempotencyKeys
from aegis_server.store.keys import ApiKeys
from aegis_server.store.locations import default_audit_dir, missing_sqlite_file
from aegis_server.store.migrate import check_schema, upgrade_engine
from aegis_server.store.policy_versions import PolicyVersions
from aegis_server.store.proposal_history import ProposalHistory
from aegis_server.store.review_queue import ReviewQueue
from aegis_server.store.reviews import Reviews
from aegis_server.store.server_settings import ServerSettings
from aegis_server.store.statistics import Statistics
from aegis_server.store.webhooks import Webhooks

__all__ = ["Store", "open_existing", "verify_database"]

_Room = TypeVar("_Room")
_P = ParamSpec("_P")
_R = TypeVar("_R")


class _Delegate(Generic[_Room, _P, _R]):
    """A method of `Store` that is `method` of the room in the attribute `room` (looked up by name on the
    instance, so a room's own attributes and patches apply)."""

    def __init__(self, room: str, method: Callable[Concatenate[_Room, _P], _R]) -> None:
        self._room = room
        self._name = method.__name__
        self.__doc__ = method.__doc__

    @overload
    def __get__(self, instance: None, owner: type[Any]) -> _Delegate[_Room, _P, _R]: ...

    @overload
    def __get__(self, instance: object, owner: type[Any]) -> Callable[_P, _R]: ...

    def __get__(self, instance: object | None, owner: type[Any]) -> _Delegate[_Room, _P, _R] | Callable[_P, _R]:
        if instance is None:
            return self
        method: Callable[_P, _R] = getattr(getattr(instance, self._room), self._name)
        return method


class Store:
    """The repository of the AEGIS server. Open it with `await Store.open(url)`; close it with `close()`.

    `clock` (default: the system clock, UTC) stamps audit records and key/policy times; tests patch it.
    `audit_key` says where the audit (HMAC) key is: `Store.open` defaults to the key file of
    `default_audit_dir(url)`; a store made here without one uses a random key of its own.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        clock: Callable[[], datetime] | None = None,
        batch_writer: sa.Engine | None = None,
        loop_writer: sa.Engine | None = None,
        audit_key: AuditKeySource | None = None,
    ) -> None:
        self.database = Database(engine, clock=clock, loop_writer=loop_writer, audit_key=audit_key)
        idempotency = self._idempotency = IdempotencyKeys(self.database)
        self.api_keys = ApiKeys(self.database)
        self.settings = ServerSettings(self.database)
        self.decisions = Decisions(self.database, idempotency)
        self.group_commit = GroupCommit(
            self.database,
            idempotency,
            self.decisions.record_alone,
            batch_writer=batch_writer,
            loop_writer=loop_writer,
        )
        self.decisions.group_commit = self.group_commit
        self.reviews = Reviews(self.database)
        self.executions = Executions(self.database)
        self.audit = AuditLog(self.database)
        self.audit_checks = DecisionAuditCheck(self.database)
        self.policies = Policies(self.database, self.settings)
        self.capabilities = Capabilities(self.database, self.settings)
        self.policy_versions = PolicyVersions(self.database)
        self.proposal_history = ProposalHistory(self.database)
        self.console_sessions = ConsoleSessions(self.database)
        self.review_queue = ReviewQueue(self.database)
        self.statistics = Statistics(self.database)
        self.webhooks = Webhooks(self.database)

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        migrate: bool = True,
        clock: Callable[[], datetime] | None = None,
        audit_key: AuditKeySource | None = None,
    ) -> Store:
        """Connect to `url` (`sqlite+aiosqlite:///path`, `postgresql+asyncpg://...`; plain `sqlite:///` and
        `postgresql://` are accepted). With `migrate`, pending migrations are applied first (safe when
        several processes start at once); without, a schema that is not at head raises `SchemaNotReady`.
        `audit_key`: where the audit key is (default: `audit-hmac.key` in `default_audit_dir(url)`, made
        on the first write; an in-memory database uses a random key)."""
        if audit_key is None:
            directory = default_audit_dir(url)
            audit_key = AuditKeySource(file=directory / "audit-hmac.key" if directory is not None else None)
        engine = create_engine(url)
        try:
            if migrate:
                await upgrade_engine(engine)
            else:
                await check_schema(engine)
        except BaseException:
            await engine.dispose()
            raise
        return cls(
            engine,
            clock=clock,
            batch_writer=sqlite_batch_writer(url),
            loop_writer=sqlite_batch_writer(url, on_event_loop=True),
            audit_key=audit_key,
        )

    @property
    def engine(self) -> AsyncEngine:
        return self.database.engine

    @property
    def dialect(self) -> str:
        """ "sqlite" or "postgresql"."""
        return "postgresql" if self.database.postgres else "sqlite"

    @property
    def url(self) -> str:
        """The database URL with any password hidden."""
        return redact_url(self.database.engine.url)

    async def close(self) -> None:
        self._idempotency.close()
        await self.group_commit.close()
        await self.database.engine.dispose()

    async def ping(self) -> bool:
        """True when the database answers a trivial query."""
        try:
            async with self.database.read() as conn:
                await conn.execute(sa.text("SELECT 1"))
        except Exception:  # any failure means "not reachable"; callers report it, nothing to re-raise
            return False
        return True

    # the keyed chain
    prepare_chain = _Delegate("database", Database.prepare_chain)
    chain_state = _Delegate("database", Database.chain_state)
    raise_chain_floor = _Delegate("database", Database.raise_chain_floor)
    audit_linker = _Delegate("database", Database.audit_linker)

    # API keys
    create_api_key = _Delegate("api_keys", ApiKeys.create_api_key)
    update_api_key = _Delegate("api_keys", ApiKeys.update_api_key)
    authenticate = _Delegate("api_keys", ApiKeys.authenticate)
    list_api_keys = _Delegate("api_keys", ApiKeys.list_api_keys)
    get_api_key = _Delegate("api_keys", ApiKeys.get_api_key)
    revoke_api_key = _Delegate("api_keys", ApiKeys.revoke_api_key)
    count_unbound_api_keys = _Delegate("api_keys", ApiKeys.count_unbound_api_keys)
    count_api_keys = _Delegate("api_keys", ApiKeys.count_api_keys)

    # server secret and policy revision
    get_or_create_secret = _Delegate("settings", ServerSettings.get_or_create_secret)
    policy_revision = _Delegate("settings", ServerSettings.policy_revision)

    # decisions
    record_decision = _Delegate("decisions", Decisions.record_decision)
    find_idempotent = _Delegate("decisions", Decisions.find_idempotent)
    get_decision = _Delegate("decisions", Decisions.get_decision)
    get_decision_binding = _Delegate("decisions", Decisions.get_decision_binding)
    list_decisions = _Delegate("decisions", Decisions.list_decisions)

    # reviews and executions
    resolve_review = _Delegate("reviews", Reviews.resolve_review)
    expire_due_reviews = _Delegate("reviews", Reviews.expire_due_reviews)
    record_execution = _Delegate("executions", Executions.record_execution)
    get_execution = _Delegate("executions", Executions.get_execution)

    # audit
    append_audit = _Delegate("audit", AuditLog.append_audit)
    append_audits = _Delegate("audit", AuditLog.append_audits)
    audit_log = _Delegate("audit", AuditLog.audit_log)
    audit_trail = _Delegate("audit", AuditLog.audit_trail)
    chain_head = _Delegate("audit", AuditLog.chain_head)
    record_hash = _Delegate("audit", AuditLog.record_hash)
    verify_chain = _Delegate("audit", AuditLog.verify_chain)
    verify_decisions = _Delegate("audit_checks", DecisionAuditCheck.verify_decisions)

    # API-managed policies and capabilities
    list_policies = _Delegate("policies", Policies.list_documents)
    get_policy = _Delegate("policies", Policies.get_document)
    list_policy_records = _Delegate("policies", Policies.list_records)
    get_policy_record = _Delegate("policies", Policies.get_record)
    put_policy = _Delegate("policies", Policies.put)
    delete_policy = _Delegate("policies", Policies.delete)
    list_capabilities = _Delegate("capabilities", Capabilities.list_documents)
    get_capability = _Delegate("capabilities", Capabilities.get_document)
    list_capability_records = _Delegate("capabilities", Capabilities.list_records)
    get_capability_record = _Delegate("capabilities", Capabilities.get_record)
    put_capability = _Delegate("capabilities", Capabilities.put)
    delete_capability = _Delegate("capabilities", Capabilities.delete)


async def open_existing(url: str, audit_key: AuditKeySource | None = None) -> Store:
    """`Store.open(url, migrate=False)` for checking a database: a SQLite file that does not exist is not
    created (`SchemaNotReady`)."""
    database = await asyncio.to_thread(missing_sqlite_file, url)
    if database is not None:
        raise SchemaNotReady(
            f"there is no SQLite database at {database}; check the --db URL (the server writes "
            "its database where its db_url points, by default ./.aegis/aegis.db)"
        )
    return await Store.open(url, migrate=False, audit_key=audit_key)


async def verify_database(url: str, audit_key: AuditKeySource | None = None) -> AuditVerification:
    """Verify the audit chain of the database at `url` (the chain alone; `aegis_server.audit`
    adds the checkpoint and the decisions). Raises `SchemaNotReady` when the database has no (current)
    AEGIS schema, or is a SQLite file that does not exist (it is not created)."""
    store = await open_existing(url, audit_key)
    try:
        return await store.verify_chain()
    finally:
        await store.close()
