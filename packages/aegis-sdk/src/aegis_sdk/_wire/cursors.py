"""The opaque `next_cursor` of the paged listings (decisions, audit log), for the server and the fake.

A cursor is the URL-safe base64 (unpadded) of the JSON `[kind, order, key]`: the listing it belongs to,
its order ("asc"/"desc") and the key of the last item of the page. A client passes it back unchanged;
`decode_cursor` refuses a cursor of another listing or order, or one that is not a cursor at all.
"""

from __future__ import annotations

import base64
import binascii
import json

__all__ = ["CursorError", "decode_cursor", "encode_cursor"]


class CursorError(ValueError):
    """A cursor that was not issued for this listing and order; `detail` says why."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"invalid cursor ({detail}); pass the next_cursor of the previous page unchanged")
        self.detail = detail


def encode_cursor(kind: str, order: str, key: int) -> str:
    """The cursor of the page after the item whose key is `key`."""
    raw = json.dumps([kind, order, key], separators=(",", ":")).encode("ascii")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str, kind: str, order: str) -> int:
    """The key inside `cursor`; raises `CursorError` unless it is a cursor of listing `kind` in `order`."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError):
        raise CursorError("not a cursor of this server") from None
    if not (isinstance(value, list) and len(value) == 3 and isinstance(value[2], int)):
        raise CursorError("not a cursor of this server")
    if value[0] != kind:
        raise CursorError(f"a cursor of the {value[0]} listing, not of {kind}")
    if value[1] != order:
        raise CursorError(f"a cursor for order {value[1]!r}, not {order!r}")
    return int(value[2])
