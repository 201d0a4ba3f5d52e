"""How large a value is, as the cost estimator sees it: `Size` (an upper bound, measured lazily from a
proposal's value or computed from a condition's operands) and `copy_units` (what copying a value costs the
`cel` library). The weights that turn these into cost units are `_cost`'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "MAP_ENTRY_COPY",
    "SCALAR",
    "STRING_COPY_CHARS",
    "Size",
    "bounded",
    "copy_units",
    "measure",
    "merge",
    "merge_optional",
    "merge_two",
]

MAP_ENTRY_COPY = 4
"""A map entry costs this much more to copy than a list item (its key, its hash: ~100 ns against ~20)."""
STRING_COPY_CHARS = 512
"""A selected string is copied whole, ~0.03 ns a character: one unit per this many characters."""

_UNSET: Any = object()


class Size:
    """An upper bound of a value: `count` (length of a string, items of a list, entries of a map),
    `deep` (its deep size, >= 1) and, for collections, bounds of its elements (`item`: what iterating
    yields, list items or map keys), members (`value`: what indexing yields) and `fields`.

    A size measured from a proposal's value works out its parts only when they are asked for."""

    __slots__ = ("_fields", "_item", "_source", "_value", "bounded", "count", "deep")

    def __init__(
        self,
        count: int = 0,
        deep: int = 1,
        item: Size | None = None,
        value: Size | None = None,
        fields: dict[str, Size] | None = None,
        bounded: bool = False,
        source: Any = _UNSET,
    ) -> None:
        self.count = count
        self.deep = deep
        self._item = item
        self._value = value
        self._fields = fields
        self.bounded = bounded  # only `deep` is known: every part is at most as large
        self._source = source

    def _expand(self, members: bool = True) -> None:
        source = self._source
        if isinstance(source, Mapping) and not members:  # only the keys: what iterating a map yields
            longest_key = max((len(key) if isinstance(key, str) else 1 for key in source), default=0)
            self._item = Size(count=longest_key, deep=max(1, longest_key)) if source else None
            return
        self._source = _UNSET
        if isinstance(source, list | tuple):
            longest = -1  # strings and scalars (most lists) are measured inline
            others: list[Size] = []
            for item in source:
                kind = type(item)
                if kind is str:
                    longest = max(longest, len(item))
                elif kind is int or kind is float or kind is bool or item is None:
                    longest = max(longest, 0)
                else:
                    others.append(measure(item))
            if longest >= 0:
                others.append(Size(count=longest, deep=max(1, longest)))
            self._item = self._value = merge(others)
        elif isinstance(source, Mapping):
            longest_key = max((len(key) if isinstance(key, str) else 1 for key in source), default=0)
            self._item = Size(count=longest_key, deep=max(1, longest_key)) if source else None
            self._fields = {str(key): measure(value) for key, value in source.items()}
            self._value = merge(self._fields.values())

    @property
    def item(self) -> Size | None:
        if self._source is not _UNSET and self._item is None:
            self._expand(members=False)
        return self._item

    @property
    def value(self) -> Size | None:
        if self._source is not _UNSET:
            self._expand()
        return self._value

    @property
    def fields(self) -> dict[str, Size] | None:
        if self._source is not _UNSET:
            self._expand()
        return self._fields

    def copy_units(self) -> int:
        """What copying a value of this size costs the library: a measured value's `copy_units`, a string
        one `memcpy`, a computed value at most two units per unit of its deep size."""
        if self._source is not _UNSET:
            return copy_units(self._source)
        if self._item is None and self._fields is None and not self.bounded:
            return 1 + self.count // STRING_COPY_CHARS  # a string or a scalar
        return 2 * self.deep

    def element(self) -> Size:
        item = self.item
        return item if item is not None else bounded(self.deep)

    def member(self) -> Size:
        value = self.value
        return value if value is not None else bounded(self.deep)

    def select(self, name: str) -> Size:
        fields = self.fields
        if fields is not None:
            found = fields.get(name)
            if found is not None:
                return found
            if self.value is None:
                return SCALAR  # no such field: the library raises, nothing to iterate
        return self.member()


SCALAR = Size()


def bounded(deep: int) -> Size:
    """A value known only to be at most `deep` in deep size: so is each of its parts."""
    bound = Size(count=deep, deep=deep, bounded=True)
    bound._item = bound._value = bound
    return bound


def merge(sizes: Iterable[Size]) -> Size | None:
    merged: Size | None = None
    for size in sizes:
        merged = size if merged is None else merge_two(merged, size)
    return merged


def merge_two(a: Size, b: Size) -> Size:
    if a is b:
        return a
    if a.bounded or b.bounded:
        return bounded(max(a.deep, b.deep))
    if (
        a._source is _UNSET
        and b._source is _UNSET
        and a._item is None
        and b._item is None
        and a._fields is None
        and b._fields is None
    ):
        # Two strings or scalars: one that is at least as large as the other in both respects bounds both.
        if a.count >= b.count and a.deep >= b.deep:
            return a
        if b.count >= a.count and b.deep >= a.deep:
            return b
        return Size(count=max(a.count, b.count), deep=max(a.deep, b.deep))
    fields: dict[str, Size] | None = None
    a_fields, b_fields = a.fields, b.fields
    if a_fields is not None or b_fields is not None:
        fields = dict(a_fields or {})
        for name, size in (b_fields or {}).items():
            fields[name] = merge_two(fields[name], size) if name in fields else size
    return Size(
        count=max(a.count, b.count),
        deep=max(a.deep, b.deep),
        item=merge_optional(a.item, b.item),
        value=merge_optional(a.value, b.value),
        fields=fields,
    )


def merge_optional(a: Size | None, b: Size | None) -> Size | None:
    if a is None:
        return b
    if b is None:
        return a
    return merge_two(a, b)


def _deep(value: Any) -> int:
    """The deep size of a plain value: characters of strings, plus items and entries, recursively."""
    kind = type(value)
    if kind is str or kind is bytes:
        return len(value) or 1
    if kind is list or kind is tuple:
        total = 1
        for item in value:
            item_kind = type(item)
            total += (len(item) or 1) if item_kind is str else 1 if item_kind in _SCALARS else _deep(item)
        return total
    if isinstance(value, Mapping):
        total = 1
        for key, item in value.items():
            total += _deep(key) + ((len(item) or 1) if type(item) is str else _deep(item))
        return total
    return 1


_SCALARS = (int, float, bool, type(None))


def copy_units(value: Any) -> int:
    """What copying a plain value costs the library: 1 a list item or scalar, 2 a string (plus 1 per
    `STRING_COPY_CHARS` characters), 4 more a map entry (measured ~20, ~45 and ~100 ns), recursively."""
    kind = type(value)
    if kind is str or kind is bytes:
        return 2 + len(value) // STRING_COPY_CHARS
    if kind is list or kind is tuple:
        return 1 + _items_copy_units(value)
    if isinstance(value, Mapping):
        return 1 + MAP_ENTRY_COPY * len(value) + _items_copy_units(value.values())
    return 1


def _items_copy_units(items: Iterable[Any]) -> int:
    """The copy units of a collection's items (scalars and strings inline: the common case)."""
    total = 0
    for item in items:
        item_kind = type(item)
        total += (
            (2 + len(item) // STRING_COPY_CHARS)
            if item_kind is str
            else 1
            if item_kind in _SCALARS
            else copy_units(item)
        )
    return total


def measure(value: Any) -> Size:
    """The `Size` of a plain value: its count and deep size now, its parts when asked for."""
    if isinstance(value, str | bytes):
        return Size(count=len(value), deep=max(1, len(value)))
    if isinstance(value, list | tuple | Mapping):
        return Size(count=len(value), deep=_deep(value), source=value)
    return SCALAR
