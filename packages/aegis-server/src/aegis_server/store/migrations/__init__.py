"""Alembic migrations of the AEGIS store, shipped inside the package (run by `aegis_server.store.migrate`)."""

__all__: list[str] = []
