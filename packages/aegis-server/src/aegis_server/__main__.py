"""`python -m aegis_server …` is `aegis-server …`."""

from aegis_server.cli import main

raise SystemExit(main())
