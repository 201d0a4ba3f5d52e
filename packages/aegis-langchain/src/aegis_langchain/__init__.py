"""aegis-langchain: governed LangChain tools and agents for AEGIS.

```python
from aegis_langchain import governed_tool

@governed_tool("payments.refund", client=aegis, async_client=aaegis)
def refund(order_id: str, amount: float, currency: str) -> str:
    \"\"\"Refund (part of) an order.\"\"\"
    ...
```

Every call is proposed to AEGIS with the tool's validated arguments and runs only on ALLOW; refusals are
`ToolException`s (and `PermissionError`s) the model can read. See docs/langchain.md.
`GovernanceMiddleware` (LangChain v1 agents) needs the `agents` extra and is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aegis_langchain._artifact import GovernanceArtifact
from aegis_langchain._call import current_decision
from aegis_langchain._errors import (
    ActionDenied,
    ConfirmationRequired,
    GovernanceRefusal,
    GovernanceUnavailable,
    ReviewPending,
)
from aegis_langchain._execution import ToolError
from aegis_langchain._hitl import INTERRUPT_KEY
from aegis_langchain._settings import (
    DEFAULT_ACTOR_ID,
    DEFAULT_REVIEW_TIMEOUT,
    Settings,
    configure,
    derive_capability,
    reset_configuration,
)
from aegis_langchain._tool import GovernedTool, govern_tool, govern_tools, governed_tool
from aegis_sdk._version import installed_version

if TYPE_CHECKING:
    from aegis_langchain.middleware import GovernanceMiddleware

__version__ = installed_version("aegisgov-langchain")


def __getattr__(name: str) -> Any:
    if name == "GovernanceMiddleware":
        from aegis_langchain.middleware import GovernanceMiddleware

        return GovernanceMiddleware
    raise AttributeError(f"module 'aegis_langchain' has no attribute {name!r}")


__all__ = [
    "DEFAULT_ACTOR_ID",
    "DEFAULT_REVIEW_TIMEOUT",
    "INTERRUPT_KEY",
    "ActionDenied",
    "ConfirmationRequired",
    "GovernanceArtifact",
    "GovernanceMiddleware",
    "GovernanceRefusal",
    "GovernanceUnavailable",
    "GovernedTool",
    "ReviewPending",
    "Settings",
    "ToolError",
    "__version__",
    "configure",
    "current_decision",
    "derive_capability",
    "govern_tool",
    "govern_tools",
    "governed_tool",
    "reset_configuration",
]
