"""Wire pieces the SDK's fake platform and `aegis-server` share, so the two cannot drift apart.

- `canonical`: canonical JSON and its SHA-256 (audit chain, token binding, idempotency);
- `envelope`: the `ApiError` every error answer is raised as, and the `{"error": {...}}` body;
- `cursors`: the opaque `next_cursor` of the paged listings;
- `listing`: the filters of the decision and audit listings, parsed from query parameters.

Private to the AEGIS packages: import the modules, not this package. It depends on the standard library
and pydantic only (orjson, when installed, only makes canonical JSON faster, with the same bytes).
"""

__all__: list[str] = []
