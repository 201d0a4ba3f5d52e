"""The platform's endpoints, one module per area: each holds the call builders (no I/O) and, for the
namespaces of a client (`client.decisions`, `client.capabilities`, `client.policies`, `client.audit`), the
synchronous class and its asynchronous twin, which only send what the builders describe."""

from aegis_sdk._resources.audit import AsyncAudit, Audit
from aegis_sdk._resources.capabilities import AsyncCapabilities, Capabilities
from aegis_sdk._resources.decisions import AsyncDecisions, Decisions
from aegis_sdk._resources.policies import AsyncPolicies, Policies

__all__ = [
    "AsyncAudit",
    "AsyncCapabilities",
    "AsyncDecisions",
    "AsyncPolicies",
    "Audit",
    "Capabilities",
    "Decisions",
    "Policies",
]
