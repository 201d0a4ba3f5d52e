"""Limits and defaults of the client that several of its modules read: long-poll and review waits, the
proposal memory, page sizes and the User-Agent header. Retry limits live in `_retry.py`."""

from __future__ import annotations

import platform

from aegis_sdk._version import __version__

MAX_WAIT_SECONDS = 60
"""The platform long-polls a decision for at most this long per request (`?wait=`)."""
REVIEW_POLL_PAUSE = 1.0
"""Pause between two polls when the platform answers a long-poll early with the review still pending."""
PROPOSAL_MEMORY_SIZE = 1024
"""How many pending proposals (REQUIRE_CONFIRMATION / ESCALATE) a client remembers for confirm()."""
DEFAULT_REVIEW_TIMEOUT = 600.0
MAX_PAGE_SIZE = 200

USER_AGENT = f"aegis-sdk/{__version__} python/{platform.python_version_tuple()[0]}.{platform.python_version_tuple()[1]}"

__all__ = [
    "DEFAULT_REVIEW_TIMEOUT",
    "MAX_PAGE_SIZE",
    "MAX_WAIT_SECONDS",
    "PROPOSAL_MEMORY_SIZE",
    "REVIEW_POLL_PAUSE",
    "USER_AGENT",
]
