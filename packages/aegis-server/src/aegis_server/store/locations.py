"""Where a database's files are: the SQLite file of a URL, and the directory of its audit key and
checkpoints."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

from sqlalchemy.engine import URL

from aegis_server.store.engine import normalise_url

__all__ = ["default_audit_dir", "missing_sqlite_file"]


def default_audit_dir(url: str) -> Path | None:
    """Where the audit key files and checkpoints live unless configured (AEGIS_AUDIT_CHECKPOINT_DIR):
    beside a SQLite file (its name with the suffix `.audit`: `./.aegis/aegis.audit/` for
    `./.aegis/aegis.db`), under
    `~/.aegis/audit/<host>-<port>-<database>/` for a server database (the home directory, so the server
    and the CLI agree from any working directory); None for in-memory SQLite (nothing to anchor: the
    chain ends with the process)."""
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = _sqlite_file(parsed)
        if path is None:
            return None
        return path.with_suffix(".audit") if path.suffix != ".audit" else path.with_name(path.name + "-audit")
    name = f"{parsed.host or 'localhost'}-{parsed.port or 'default'}-{parsed.database or 'default'}"
    return Path.home() / ".aegis" / "audit" / "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _sqlite_file(parsed: URL) -> Path | None:
    """The file of a SQLite URL, also in SQLite's URI form (`sqlite:///file:/path/aegis.db?mode=ro&uri=true`,
    the way to open a file read-only); None for an in-memory database."""
    database = parsed.database
    if not database or database == ":memory:" or "mode=memory" in str(parsed.query):
        return None
    if str(parsed.query.get("uri", "")).lower() in ("true", "1") and database.startswith("file:"):
        database = urllib.parse.unquote(urllib.parse.urlsplit(database).path)
        if not database:
            return None
    return Path(database).expanduser()


def missing_sqlite_file(url: str) -> str | None:
    """The path of a SQLite database file that does not exist, or None."""
    parsed = normalise_url(url)
    path = _sqlite_file(parsed) if parsed.get_backend_name() == "sqlite" else None
    if path is not None and not path.is_file():
        return str(path)
    return None
