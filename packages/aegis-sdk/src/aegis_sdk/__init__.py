"""aegis-sdk: the Python client for the AEGIS governance platform."""

from aegis_sdk.models import (
    Action,
    Actor,
    Capability,
    Context,
    Decision,
    Policy,
    PolicyRule,
    Proposal,
    Review,
)

__all__ = [
    "Action",
    "Actor",
    "Capability",
    "Context",
    "Decision",
    "Policy",
    "PolicyRule",
    "Proposal",
    "Review",
]
