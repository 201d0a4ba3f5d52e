"""Governed FastAPI routes for AEGIS."""
