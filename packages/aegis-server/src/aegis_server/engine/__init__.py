"""The AEGIS policy engine: pure (no I/O, no framework, no clock), compiled once, evaluated per proposal.

```python
policy_set = compile_policy_set(policies, capabilities)        # PolicySetError if anything is wrong
evaluation = evaluate(proposal, policy_set, now=datetime.now(timezone.utc))
```
"""

from ._cel import SCOPE_VARIABLES, re_match
from ._sensitive import SENSITIVE_PREFIX, hash_value, keyed_digest, value_key_from_secret
from .config import BASE_RISK, STRICTNESS, EngineConfig
from .errors import ParameterSchemaError, PolicySetError, UnknownCapabilityError, format_problem
from .evaluate import Evaluation, RuleMatches, evaluate, evaluate_traced
from .policy_set import CompiledCapability, CompiledRule, PolicySet, compile_policy_set

__all__ = [
    "BASE_RISK",
    "SCOPE_VARIABLES",
    "SENSITIVE_PREFIX",
    "STRICTNESS",
    "CompiledCapability",
    "CompiledRule",
    "EngineConfig",
    "Evaluation",
    "ParameterSchemaError",
    "PolicySet",
    "PolicySetError",
    "RuleMatches",
    "UnknownCapabilityError",
    "compile_policy_set",
    "evaluate",
    "evaluate_traced",
    "format_problem",
    "hash_value",
    "keyed_digest",
    "re_match",
    "value_key_from_secret",
]
