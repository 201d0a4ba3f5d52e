"""aegis-mcp: AEGIS governance for the tools agents reach through the Model Context Protocol.

For an MCP server written with the MCP SDK, put the middleware in front of its tools:

```python
from mcp.server.mcpserver import MCPServer
from aegis_mcp import GovernanceMiddleware
from aegis_sdk import AsyncAegisClient

server = MCPServer("payments", middleware=[GovernanceMiddleware(AsyncAegisClient(), actor="support-agent")])
```

For any other MCP server, run the governing proxy in front of it: `aegis-mcp proxy --actor ID -- COMMAND ...`.
Every `tools/call` is proposed to AEGIS first and runs only under an ALLOW. See docs/mcp.md.
"""

from __future__ import annotations

from aegis_mcp._call import ToolCall, capability_for
from aegis_mcp._config import ActorConfig, AegisSettings, ConfigError, ProxyConfig, UpstreamConfig, load_config
from aegis_mcp._middleware import ActorSource, GovernanceMiddleware
from aegis_mcp._proxy import GoverningProxy, running_proxy, serve
from aegis_mcp._refusals import META_KEY
from aegis_sdk._version import installed_version

__version__ = installed_version("aegisgov-mcp")

__all__ = [
    "META_KEY",
    "ActorConfig",
    "ActorSource",
    "AegisSettings",
    "ConfigError",
    "GovernanceMiddleware",
    "GoverningProxy",
    "ProxyConfig",
    "ToolCall",
    "UpstreamConfig",
    "__version__",
    "capability_for",
    "load_config",
    "running_proxy",
    "serve",
]
