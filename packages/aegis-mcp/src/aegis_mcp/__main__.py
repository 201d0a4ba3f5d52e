"""`python -m aegis_mcp`: the `aegis-mcp` command."""

from __future__ import annotations

import sys

from aegis_mcp._cli import main

__all__: list[str] = []  # run, not imported

if __name__ == "__main__":
    sys.exit(main())
