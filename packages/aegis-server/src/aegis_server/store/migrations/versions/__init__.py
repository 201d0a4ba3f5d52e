"""Alembic revision scripts (Alembic skips this file)."""

__all__: list[str] = []
