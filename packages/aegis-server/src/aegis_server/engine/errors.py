"""The engine's exceptions. Each says what was wrong and how to fix it, and never carries a parameter value."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aegis_sdk.models import PolicyProblem

__all__ = [
    "ParameterSchemaError",
    "PolicySetError",
    "SchemaCompileError",
    "UnknownCapabilityError",
    "format_problem",
    "short_repr",
]


class PolicySetError(Exception):
    """A policy set (policies + capabilities) failed to load or compile; the whole set is rejected.

    `problems` lists every problem found, each naming its source file, policy and rule where known.
    """

    def __init__(self, problems: Sequence[PolicyProblem]) -> None:
        self.problems: list[PolicyProblem] = list(problems)
        count = len(self.problems)
        lines = [f"the policy set was rejected ({count} problem{'s' if count != 1 else ''}):"]
        lines.extend(f"  - {format_problem(problem)}" for problem in self.problems)
        super().__init__("\n".join(lines))


def format_problem(problem: PolicyProblem) -> str:
    """One line for a problem: `source: policy 'p' rule 'r': message`."""
    location = " ".join(
        part
        for part in (
            f"policy '{problem.policy}'" if problem.policy else "",
            f"rule '{problem.rule}'" if problem.rule else "",
        )
        if part
    )
    return ": ".join(part for part in (problem.source or "", location, problem.message) if part)


class SchemaCompileError(ValueError):
    """A `parameter_schema` is not a valid JSON Schema, or marks a sensitive field where it cannot be honoured."""


def short_repr(value: Any) -> str:
    """`repr(value)` cut to 80 characters, for messages quoting a schema (never a parameter value)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class UnknownCapabilityError(Exception):
    """The proposal names a capability that is not registered. `suggestions` are the nearest registered names."""

    def __init__(self, name: str, suggestions: Sequence[str]) -> None:
        self.name = name
        self.suggestions: list[str] = list(suggestions)
        if self.suggestions:
            hint = "did you mean " + " or ".join(f"'{s}'" for s in self.suggestions) + "?"
        else:
            hint = "register it (capabilities file or POST /api/v1/capabilities) or check the spelling."
        super().__init__(f"unknown capability '{name}': {hint}")


class ParameterSchemaError(Exception):
    """The parameters do not match the capability's `parameter_schema`.

    `field` is the path of the first offending field relative to the parameters (`amount`,
    `recipients[3]`, or `(root)` for the parameters object itself); `errors` lists every problem as
    `{"field", "message", "validator"}`. Messages describe the rule that failed, never the value sent.
    """

    def __init__(self, capability: str, field: str, errors: Sequence[dict[str, Any]]) -> None:
        self.capability = capability
        self.field = field
        self.errors: list[dict[str, Any]] = list(errors)
        first = self.errors[0]["message"] if self.errors else "does not match the schema"
        more = f" (and {len(self.errors) - 1} more)" if len(self.errors) > 1 else ""
        super().__init__(
            f"invalid parameters for capability '{capability}': {field}: {first}{more}; "
            "fix the parameters to match the capability's parameter_schema"
        )
