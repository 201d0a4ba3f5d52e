"""The cost of a condition: a static check at compile time and an estimate from the data before evaluating.

The `cel` library has no step or cost limit, and it holds the GIL for a whole evaluation: a condition
such as `to.exists(r, to.exists(s, r == s + 'x'))` over 3,000 recipients ran for seconds and stalled
every other request of the server. The authors of conditions are trusted (policy managers); the data
is not (any proposing agent). So the cost is estimated from the condition *and the sizes of the data it
reads*, before the library runs, and a condition over the budget is not evaluated at all: the rule
fails closed (`evaluation_budget_exceeded`).

Cost model (in the spirit of Kubernetes' CEL cost estimation; one unit is roughly one elementary step
of the library, ~7-60 ns here):

- every operator, literal, variable, field selection, index and call costs 1; a field selection and an
  index add the *copy* of their result (`_copy_units`): the library copies the whole selected value, so
  `flags.exists(k, flags[k] == 'x')` is quadratic in the size of `flags` (12,000 flags ran 42 s);
- every run of the library copies the variables it is given, and the first run of a proposal converts
  them (`SCOPE_COPY_COST`, `CONVERSION_COST`: charged by the engine, `scope_cost`);
- a comparison (`==`, `<`, ...) adds `COMPARISON_COST` per unit of the smaller operand's size, `in` the
  size of the list or map,
  `+` the sizes of both operands (strings and lists are copied), a function call the sizes of its
  arguments; the *size* of a value is its deep size: characters of a string, plus items and entries of
  lists and maps, counted recursively (a number or a bool is 1);
- a comprehension (`all`, `exists`, `exists_one`, `map`, `filter`) costs its range plus, for each
  element, its body plus `ELEMENT_COST`: nested comprehensions multiply; `map` and `filter` add
  `ACCUMULATOR_COST` per element for every step (the library copies the list it builds: quadratic);
- `x in list` adds `MEMBERSHIP_COST` per element of the list, and a `matches` call `CALLBACK_COST`;
- `&&`, `||` and `?:` count both sides (an upper bound: evaluation may stop early).

Sizes come from the proposal: a field the condition reads (`action.parameters.to`) is measured, and
a comprehension's variable stands for the largest element of its range (the largest length, the largest
size, field by field). A value computed by the condition gets a size bound from its operands (a
concatenation is as large as both operands; `map` as large as its range times its body). The estimate
is therefore an upper bound of the work, not of the time, and it is cheap: one walk of the condition
and one walk of the values it reads.

Every condition the library runs is estimated (the engine's fast path decides most plain conditions
without it), and the estimates of one proposal's conditions add up against one budget.

Statically, a condition nesting more than `MAX_INDEPENDENT_NESTING` comprehensions whose ranges do not
depend on an enclosing comprehension's variable (a cross product, `a.all(x, b.all(y, c.all(z, ...)))`)
is refused when the policy is saved or loaded: its cost grows as the cube of the input.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import cel

from ._cel_syntax import STRING_START, string_end

__all__ = [
    "CONVERSION_COST",
    "MAX_INDEPENDENT_NESTING",
    "SCOPE_COPY_COST",
    "ConditionCost",
    "CostCompileError",
    "UnreadableCondition",
    "compile_cost",
    "scope_cost",
]

MAX_INDEPENDENT_NESTING = 2
"""The deepest nesting of comprehensions over independent ranges a condition may have (a cross product of
two lists is allowed and budgeted at run time; three is refused at save/load)."""

MAX_UNESTIMATED_CONCATENATIONS = 8
"""A condition without comprehensions over the proposal's data is linear in that data and is not estimated,
unless it chains more than this many `+` (each copies its operands: k of them cost k² times the data)."""

_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
_TOKEN = re.compile(
    r"(?P<space>\s+|//[^\n]*)"
    r"|(?P<number>(?:0[xX][0-9a-fA-F]+|\d*\.\d+(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|\d+\.?)[uU]?)"
    r"|(?P<ident>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>==|!=|<=|>=|&&|\|\||[<>!()\[\]{}.,?:+\-*/%])"
)
_RELATIONS = frozenset({"==", "!=", "<", "<=", ">", ">=", "in"})

# Weights, measured against the library (bench/boundaries.py, "calibration"): one unit is ~7-60 ns there.
ELEMENT_COST = 10
"""Each element a comprehension visits: the library spends ~0.25-0.7 µs per step besides the body."""
ACCUMULATOR_COST = 2
"""`map` and `filter` copy their result list on every step (quadratic: 4,000 elements took 0.7 s)."""
COMPARISON_COST = 2
"""A comparison walks both operands as far as the smaller one: per unit of its size (maps compare slowest)."""
MEMBERSHIP_COST = 4
"""`x in list` compares with each element (~90-190 ns each)."""
SCOPE_COPY_COST = 1
"""Every run of a program copies all the variables it is given (~160 ns per map entry, ~30 ns a unit of
`_copy_units`)."""
CONVERSION_COST = 8
"""Building the library's context converts the proposal's values once (~50 ns an int in a list, ~800 ns a
map entry or a string in a list: up to ~400 ns per unit of `_copy_units`)."""
COPY_COST = 1
"""Selecting a field or indexing copies the result, item by item (`_copy_units`: ~20-30 ns a unit)."""
MAP_ENTRY_COPY = 4
"""A map entry costs this much more to copy than a list item (its key, its hash: ~100 ns against ~20)."""
STRING_COPY_CHARS = 512
"""A selected string is copied whole, ~0.03 ns a character: one unit per this many characters."""
CALLBACK_COST = 50
"""`matches`/`re_match` calls back into Python (~2 µs a call)."""
_CALLBACKS = frozenset({"matches", "re_match"})
_KEYWORDS = frozenset({"true", "false", "null"})


class CostCompileError(ValueError):
    """The condition's cost is statically excessive; the message says why and how to fix it."""


class UnreadableCondition(CostCompileError):
    """The estimator cannot read the condition's syntax (the library accepted it)."""


# -- parsing ----------------------------------------------------------------------------------------
# Nodes are tuples: ("lit", size) ("var", name) ("select", node, field) ("has", node)
# ("index", node, node) ("list", [node]) ("map", [(node, node)]) ("unary", node)
# ("binary", op, node, node) ("cond", node, node, node) ("call", name, target | None, [node])
# ("macro", name, range, variable, [node]).

Node = tuple[Any, ...]


def _tokenize(source: str) -> list[tuple[str, Any]]:
    tokens: list[tuple[str, Any]] = []
    i, n = 0, len(source)
    while i < n:
        start = STRING_START.match(source, i)
        if start and (i == 0 or not (source[i - 1].isalnum() or source[i - 1] == "_")):
            end = string_end(source, start)
            try:
                value = cel.evaluate(source[i:end])
            except Exception:  # the library compiled the condition; a literal it cannot read is not ours
                raise UnreadableCondition(f"cannot read the literal {source[i:end][:40]!r}") from None
            tokens.append(("lit", _literal_size(value)))
            i = end
            continue
        match = _TOKEN.match(source, i)
        if match is None:
            raise UnreadableCondition(f"unexpected character {source[i]!r}")
        kind, text = match.lastgroup, match.group(0)
        i = match.end()
        if kind == "space":
            continue
        if kind == "number" or (kind == "ident" and text in _KEYWORDS):
            tokens.append(("lit", 1))
        elif kind == "ident" and text == "in":
            tokens.append(("op", "in"))
        else:
            tokens.append((str(kind), text))
    return tokens


def _literal_size(value: Any) -> int:
    return len(value) if isinstance(value, str | bytes) else 1


class _Parser:
    """CEL's grammar (precedence from lowest: `?:`, `||`, `&&`, relations, `+ -`, `* / %`, unary, member)."""

    def __init__(self, tokens: list[tuple[str, Any]]) -> None:
        self.tokens = tokens
        self.position = 0

    def peek(self) -> tuple[str, Any]:
        return self.tokens[self.position] if self.position < len(self.tokens) else ("end", None)

    def accept(self, op: str) -> bool:
        if self.peek() == ("op", op):
            self.position += 1
            return True
        return False

    def expect(self, op: str) -> None:
        if not self.accept(op):
            kind, value = self.peek()
            raise UnreadableCondition(f"expected {op!r}, found {value if kind != 'end' else 'the end'!r}")

    def parse(self) -> Node:
        node = self.expression()
        if self.position != len(self.tokens):
            raise UnreadableCondition(f"unexpected {self.peek()[1]!r}")
        return node

    def expression(self) -> Node:
        node = self.binary(0)
        if self.accept("?"):
            then = self.binary(0)
            self.expect(":")
            return ("cond", node, then, self.expression())
        return node

    _LEVELS: tuple[frozenset[str], ...] = (
        frozenset({"||"}),
        frozenset({"&&"}),
        _RELATIONS,
        frozenset({"+", "-"}),
        frozenset({"*", "/", "%"}),
    )

    def binary(self, level: int) -> Node:
        if level == len(self._LEVELS):
            return self.unary()
        node = self.binary(level + 1)
        while True:
            kind, value = self.peek()
            if kind != "op" or value not in self._LEVELS[level]:
                return node
            self.position += 1
            node = ("binary", value, node, self.binary(level + 1))

    def unary(self) -> Node:
        if self.accept("!") or self.accept("-"):
            return ("unary", self.unary())
        return self.member()

    def member(self) -> Node:
        node = self.primary()
        while True:
            if self.accept("."):
                kind, name = self.peek()
                if kind != "ident":
                    raise UnreadableCondition("a field name must follow '.'")
                self.position += 1
                if self.accept("("):
                    arguments = self.arguments(")")
                    node = self.call(name, node, arguments)
                else:
                    node = ("select", node, name)
            elif self.accept("["):
                index = self.expression()
                self.expect("]")
                node = ("index", node, index)
            else:
                return node

    def call(self, name: str, target: Node | None, arguments: list[Node]) -> Node:
        if target is not None and name in _MACROS and len(arguments) in (2, 3) and arguments[0][0] == "var":
            return ("macro", name, target, arguments[0][1], arguments[1:])
        if target is None and name == "has" and len(arguments) == 1:
            return ("has", arguments[0])
        return ("call", name, target, arguments)

    def arguments(self, close: str) -> list[Node]:
        items: list[Node] = []
        if self.accept(close):
            return items
        while True:
            items.append(self.expression())
            if self.accept(close):
                return items
            self.expect(",")
            if self.accept(close):
                return items

    def primary(self) -> Node:
        kind, value = self.peek()
        self.position += 1
        if kind == "lit":
            return ("lit", value)
        if kind == "ident":
            if self.accept("("):
                return self.call(value, None, self.arguments(")"))
            return ("var", value)
        if (kind, value) == ("op", "."):  # a leading dot: `.name` is the root-scoped name
            return self.primary()
        if (kind, value) == ("op", "("):
            node = self.expression()
            self.expect(")")
            return node
        if (kind, value) == ("op", "["):
            return ("list", self.arguments("]"))
        if (kind, value) == ("op", "{"):
            entries: list[tuple[Node, Node]] = []
            while not self.accept("}"):
                key = self.expression()
                self.expect(":")
                entries.append((key, self.expression()))
                if not self.accept(","):
                    self.expect("}")
                    break
            return ("map", entries)
        raise UnreadableCondition(f"unexpected {value if kind != 'end' else 'end of the condition'!r}")


# -- sizes ------------------------------------------------------------------------------------------


_UNSET: Any = object()


class _Size:
    """An upper bound of a value: `count` (length of a string, items of a list, entries of a map),
    `deep` (its deep size, >= 1) and, for collections, bounds of its elements (`item`: what iterating
    yields, list items or map keys), members (`value`: what indexing yields) and `fields`.

    A size measured from a proposal's value works out its parts only when they are asked for."""

    __slots__ = ("_fields", "_item", "_source", "_value", "bounded", "count", "deep")

    def __init__(
        self,
        count: int = 0,
        deep: int = 1,
        item: _Size | None = None,
        value: _Size | None = None,
        fields: dict[str, _Size] | None = None,
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
            self._item = _Size(count=longest_key, deep=max(1, longest_key)) if source else None
            return
        self._source = _UNSET
        if isinstance(source, list | tuple):
            longest = -1  # strings and scalars (most lists) are measured inline
            others: list[_Size] = []
            for item in source:
                kind = type(item)
                if kind is str:
                    longest = max(longest, len(item))
                elif kind is int or kind is float or kind is bool or item is None:
                    longest = max(longest, 0)
                else:
                    others.append(_measure(item))
            if longest >= 0:
                others.append(_Size(count=longest, deep=max(1, longest)))
            self._item = self._value = _merge(others)
        elif isinstance(source, Mapping):
            longest_key = max((len(key) if isinstance(key, str) else 1 for key in source), default=0)
            self._item = _Size(count=longest_key, deep=max(1, longest_key)) if source else None
            self._fields = {str(key): _measure(value) for key, value in source.items()}
            self._value = _merge(self._fields.values())

    @property
    def item(self) -> _Size | None:
        if self._source is not _UNSET and self._item is None:
            self._expand(members=False)
        return self._item

    @property
    def value(self) -> _Size | None:
        if self._source is not _UNSET:
            self._expand()
        return self._value

    @property
    def fields(self) -> dict[str, _Size] | None:
        if self._source is not _UNSET:
            self._expand()
        return self._fields

    def element(self) -> _Size:
        item = self.item
        return item if item is not None else _bounded(self.deep)

    def member(self) -> _Size:
        value = self.value
        return value if value is not None else _bounded(self.deep)

    def select(self, name: str) -> _Size:
        fields = self.fields
        if fields is not None:
            found = fields.get(name)
            if found is not None:
                return found
            if self.value is None:
                return _SCALAR  # no such field: the library raises, nothing to iterate
        return self.member()


_SCALAR = _Size()


def _bounded(deep: int) -> _Size:
    """A value known only to be at most `deep` in deep size: so is each of its parts."""
    bound = _Size(count=deep, deep=deep, bounded=True)
    bound._item = bound._value = bound
    return bound


def _merge(sizes: Iterable[_Size]) -> _Size | None:
    merged: _Size | None = None
    for size in sizes:
        merged = size if merged is None else _merge_two(merged, size)
    return merged


def _merge_two(a: _Size, b: _Size) -> _Size:
    if a is b:
        return a
    if a.bounded or b.bounded:
        return _bounded(max(a.deep, b.deep))
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
        return _Size(count=max(a.count, b.count), deep=max(a.deep, b.deep))
    fields: dict[str, _Size] | None = None
    a_fields, b_fields = a.fields, b.fields
    if a_fields is not None or b_fields is not None:
        fields = dict(a_fields or {})
        for name, size in (b_fields or {}).items():
            fields[name] = _merge_two(fields[name], size) if name in fields else size
    return _Size(
        count=max(a.count, b.count),
        deep=max(a.deep, b.deep),
        item=_merge_optional(a.item, b.item),
        value=_merge_optional(a.value, b.value),
        fields=fields,
    )


def _merge_optional(a: _Size | None, b: _Size | None) -> _Size | None:
    if a is None:
        return b
    if b is None:
        return a
    return _merge_two(a, b)


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


def _copy_units(value: Any) -> int:
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
            else _copy_units(item)
        )
    return total


def _measure(value: Any) -> _Size:
    """The `_Size` of a plain value: its count and deep size now, its parts when asked for."""
    if isinstance(value, str | bytes):
        return _Size(count=len(value), deep=max(1, len(value)))
    if isinstance(value, list | tuple | Mapping):
        return _Size(count=len(value), deep=_deep(value), source=value)
    return _SCALAR


# -- the estimate -----------------------------------------------------------------------------------


class _Value:
    """A value of the proposal, measured only when its size is needed (field selection walks it)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


Estimate = tuple[int, "_Size | _Value"]


@dataclass(frozen=True)
class ConditionCost:
    """A condition's cost model: `estimate(scope)` is an upper bound of the work evaluating it takes."""

    tree: Node
    needs_estimate: bool
    """True for a condition with comprehensions over the proposal's data (ranges that are list literals of
    literals do not count) or more than `MAX_UNESTIMATED_CONCATENATIONS` `+`: its work grows faster than
    the data it reads. Every condition the library runs is estimated all the same: even a plain one copies
    what it selects, and a 1 MiB metadata map made one `flags['k1']` cost ~300 ms."""

    def estimate(self, scope: Mapping[str, Any], limit: int) -> int:
        """The estimated cost for these scope values; stops early once it is above `limit`."""
        estimator = _Estimator(scope, limit)
        try:
            cost, _ = estimator.walk(self.tree, {})
        except _OverLimit:
            return estimator.over
        return cost


class _OverLimit(Exception):
    pass


class _Estimator:
    def __init__(self, scope: Mapping[str, Any], limit: int) -> None:
        self.scope = scope
        self.limit = limit
        self.measured: dict[int, _Size] = {}  # by identity, for the duration of one estimate
        self.copies: dict[int, int] = {}
        self.over = limit + 1
        self.scale = 1  # how many times the node being walked runs: the product of the enclosing ranges

    def size(self, size: _Size | _Value) -> _Size:
        if not isinstance(size, _Value):
            return size
        found = self.measured.get(id(size.value))
        if found is None:
            found = self.measured[id(size.value)] = _measure(size.value)
        return found

    def copy(self, size: _Size | _Value) -> int:
        """What the library spends copying a value it selects or indexes: it copies the whole result (a
        map of 12,000 flags on every `flags[k]`), ~20 ns per list item, ~100 per map entry; a string is
        one `memcpy`."""
        if isinstance(size, _Value):
            found = self.copies.get(id(size.value))
            if found is None:
                found = self.copies[id(size.value)] = _copy_units(size.value)
            return COPY_COST * found
        if size._source is not _UNSET:
            return COPY_COST * _copy_units(size._source)
        if size._item is None and size._fields is None and not size.bounded:
            return 1 + size.count // STRING_COPY_CHARS  # a string or a scalar
        return 2 * COPY_COST * size.deep  # a computed value: its deep size bounds its copy (2 units an entry)

    def check(self, cost: int) -> int:
        """`cost`, unless it (times the runs of the enclosing comprehensions' bodies) is above the limit."""
        if cost * self.scale > self.limit:
            self.over = cost * self.scale
            raise _OverLimit
        return cost

    def walk(self, node: Node, env: Mapping[str, _Size]) -> Estimate:
        kind = node[0]
        if kind == "lit":
            return 1, _Size(count=node[1], deep=max(1, node[1]))
        if kind == "var":
            name = node[1]
            if name in env:
                return 1, env[name]
            if name in self.scope:
                return 1, _Value(self.scope[name])
            return 1, _SCALAR  # an unknown name: the library raises
        if kind == "select":
            cost, size = self.walk(node[1], env)
            if isinstance(size, _Value):
                holder = size.value
                if isinstance(holder, Mapping) and node[2] in holder:
                    found = _Value(holder[node[2]])
                    return self.check(cost + 1 + self.copy(found)), found
                return cost + 1, _SCALAR  # no such field: the library raises
            selected = size.select(node[2])
            return self.check(cost + 1 + self.copy(selected)), selected
        if kind == "has":
            operand = node[1]
            cost, _ = self.walk(operand[1] if operand[0] == "select" else operand, env)
            return cost + 1, _SCALAR
        if kind == "index":
            (c1, s1), (c2, _) = self.walk(node[1], env), self.walk(node[2], env)
            member = self.size(s1).member()
            return self.check(c1 + c2 + 1 + self.copy(member)), member
        if kind == "list":
            parts = [(c, self.size(s)) for c, s in (self.walk(item, env) for item in node[1])]
            element = _merge(s for _, s in parts)
            deep = 1 + sum(s.deep for _, s in parts)
            return 1 + sum(c for c, _ in parts), _Size(count=len(parts), deep=deep, item=element, value=element)
        if kind == "map":
            keys = [(c, self.size(s)) for c, s in (self.walk(k, env) for k, _ in node[1])]
            values = [(c, self.size(s)) for c, s in (self.walk(v, env) for _, v in node[1])]
            deep = 1 + sum(s.deep for _, s in keys) + sum(s.deep for _, s in values)
            size = _Size(
                count=len(keys), deep=deep, item=_merge(s for _, s in keys), value=_merge(s for _, s in values)
            )
            return 1 + sum(c for c, _ in keys) + sum(c for c, _ in values), size
        if kind == "unary":
            cost, _ = self.walk(node[1], env)
            return cost + 1, _SCALAR
        if kind == "binary":
            return self.binary(node[1], node[2], node[3], env)
        if kind == "cond":
            c0, _ = self.walk(node[1], env)
            (c1, s1), (c2, s2) = self.walk(node[2], env), self.walk(node[3], env)
            return self.check(c0 + c1 + c2 + 1), _merge_two(self.size(s1), self.size(s2))
        if kind == "call":
            arguments = ([node[2]] if node[2] is not None else []) + node[3]
            parts = [(c, self.size(s)) for c, s in (self.walk(arg, env) for arg in arguments)]
            deep = sum(s.deep for _, s in parts)
            cost = 1 + sum(c for c, _ in parts) + deep + (CALLBACK_COST if node[1] in _CALLBACKS else 0)
            if node[1] == "size":
                return self.check(cost), _SCALAR
            return self.check(cost), _bounded(deep + 1)
        if kind == "macro":
            return self.macro(node[1], node[2], node[3], node[4], env)
        raise AssertionError(kind)  # pragma: no cover - the parser builds only the kinds above

    def binary(self, op: str, left: Node, right: Node, env: Mapping[str, _Size]) -> Estimate:
        (c1, v1), (c2, v2) = self.walk(left, env), self.walk(right, env)
        cost = c1 + c2 + 1
        if op in ("&&", "||"):
            return self.check(cost), _SCALAR
        s1, s2 = self.size(v1), self.size(v2)
        if op == "in":
            return self.check(cost + MEMBERSHIP_COST * s2.count + s2.deep + s1.deep), _SCALAR
        if op in _RELATIONS:
            return self.check(cost + COMPARISON_COST * min(s1.deep, s2.deep)), _SCALAR
        if op == "+":
            element = _merge_optional(s1.item, s2.item)
            size = _Size(count=s1.count + s2.count, deep=s1.deep + s2.deep, item=element, value=element)
            return self.check(cost + s1.deep + s2.deep), size
        return self.check(cost), _SCALAR

    def macro(self, name: str, target: Node, variable: str, body: list[Node], env: Mapping[str, _Size]) -> Estimate:
        range_cost, range_value = self.walk(target, env)
        range_size = self.size(range_value)
        element = range_size.element()
        inner = {**env, variable: element}
        body_cost = 0
        body_size = _SCALAR
        count = range_size.count
        outer_scale = self.scale
        self.scale = outer_scale * max(1, count)  # so a costly body stops the estimate before it is walked whole
        try:
            for part in body:  # the predicate (filter, 3-argument map) and the transform
                cost, body_value = self.walk(part, inner)
                body_size = self.size(body_value)
                body_cost += cost
        finally:
            self.scale = outer_scale
        total = range_cost + 1 + count * (body_cost + ELEMENT_COST)
        if name in ("map", "filter"):
            total += ACCUMULATOR_COST * count * (count - 1) // 2
        total = self.check(total)
        if name == "map":
            deep = 1 + count * body_size.deep
            return total, _Size(count=count, deep=deep, item=body_size, value=body_size)
        if name == "filter":
            return total, range_size
        return total, _SCALAR


def scope_cost(variables: Mapping[str, Any]) -> int:
    """The copy size (`_copy_units`) of the variables handed to the library: each run copies them
    (`SCOPE_COPY_COST` per unit), and building the context converts them once (`CONVERSION_COST` per unit)."""
    return _copy_units(variables)


# -- compile ----------------------------------------------------------------------------------------


def compile_cost(source: str) -> ConditionCost:
    """The cost model of a condition (the source as the library runs it).

    Raises `CostCompileError` when the condition nests more than `MAX_INDEPENDENT_NESTING`
    comprehensions over independent ranges, `UnreadableCondition` for syntax the estimator cannot read.
    """
    try:
        tree = _Parser(_tokenize(source)).parse()
    except RecursionError:
        raise UnreadableCondition("the condition nests too deeply") from None
    depth = _independent_nesting(tree, frozenset())
    if depth > MAX_INDEPENDENT_NESTING:
        raise CostCompileError(
            f"the condition nests {depth} comprehensions over independent lists (a cross product whose cost "
            f"grows as the power {depth} of the input); at most {MAX_INDEPENDENT_NESTING} are allowed: "
            "iterate parts of the outer element instead (x.items.exists(...)) or split the rule"
        )
    data_ranges = _contains(tree, lambda n: n[0] == "macro" and not _literal_list(n[2]))
    concatenations = _count(tree, lambda n: n[0] == "binary" and n[1] == "+")
    grows = data_ranges or concatenations > MAX_UNESTIMATED_CONCATENATIONS
    return ConditionCost(tree=tree, needs_estimate=grows)


def _children(node: Node) -> list[Node]:
    kind = node[0]
    if kind in ("lit", "var"):
        return []
    if kind in ("select", "has", "unary"):
        return [node[1]]
    if kind == "index":
        return [node[1], node[2]]
    if kind == "list":
        return list(node[1])
    if kind == "map":
        return [part for entry in node[1] for part in entry]
    if kind == "binary":
        return [node[2], node[3]]
    if kind == "cond":
        return list(node[1:])
    if kind == "call":
        return ([node[2]] if node[2] is not None else []) + list(node[3])
    return [node[2], *node[4]]  # macro


def _contains(node: Node, predicate: Callable[[Node], bool]) -> bool:
    return predicate(node) or any(_contains(child, predicate) for child in _children(node))


def _count(node: Node, predicate: Callable[[Node], bool]) -> int:
    return int(predicate(node)) + sum(_count(child, predicate) for child in _children(node))


def _literal_list(node: Node) -> bool:
    """A list literal of literals (`['eu', 'us']`): a range whose size does not depend on the proposal."""
    return node[0] == "list" and all(item[0] == "lit" for item in node[1])


def _uses(node: Node, names: frozenset[str]) -> bool:
    return bool(names) and _contains(node, lambda n: n[0] == "var" and n[1] in names)


def _independent_nesting(node: Node, bound: frozenset[str]) -> int:
    """The deepest chain of comprehensions each of whose range does not use an enclosing variable."""
    if node[0] != "macro":
        return max((_independent_nesting(child, bound) for child in _children(node)), default=0)
    _, _, target, variable, body = node
    independent = 0 if _literal_list(target) or _uses(target, bound) else 1
    inner = max((_independent_nesting(part, bound | {variable}) for part in body), default=0)
    return max(_independent_nesting(target, bound), independent + inner)
