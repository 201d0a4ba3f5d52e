"""`python -m aegis_mcp`: the `aegis-mcp` command."""

from __future__ import annotations

import sys

from aegis_mcp._cli import main

if __name__ == "__main__":
    sys.exit(main())
