"""`python -m aegis_server …` is `aegis-server …`."""

from aegis_server.cli import main

__all__: list[str] = []  # run, not imported

raise SystemExit(main())
