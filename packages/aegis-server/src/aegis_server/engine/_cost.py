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

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._cel_tree import RELATIONS, Node, children, contains, count, literal_list, parse_condition
from ._data_size import SCALAR, Size, bounded, copy_units, measure, merge, merge_optional, merge_two

__all__ = [
    "CONVERSION_COST",
    "MAX_INDEPENDENT_NESTING",
    "MAX_UNESTIMATED_CONCATENATIONS",
    "SCOPE_COPY_COST",
    "ConditionCost",
    "CostCompileError",
    "compile_cost",
    "scope_cost",
]

MAX_INDEPENDENT_NESTING = 2
"""The deepest nesting of comprehensions over independent ranges a condition may have (a cross product of
two lists is allowed and budgeted at run time; three is refused at save/load)."""

MAX_UNESTIMATED_CONCATENATIONS = 8
"""A condition without comprehensions over the proposal's data is linear in that data and is not estimated,
unless it chains more than this many `+` (each copies its operands: k of them cost k² times the data)."""


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
`copy_units`)."""
CONVERSION_COST = 8
"""Building the library's context converts the proposal's values once (~50 ns an int in a list, ~800 ns a
map entry or a string in a list: up to ~400 ns per unit of `copy_units`)."""
COPY_COST = 1
"""Selecting a field or indexing copies the result, item by item (`copy_units`: ~20-30 ns a unit)."""
CALLBACK_COST = 50
"""`matches`/`re_match` calls back into Python (~2 µs a call)."""
_CALLBACKS = frozenset({"matches", "re_match"})


class CostCompileError(ValueError):
    """The condition's cost is statically excessive; the message says why and how to fix it."""


# -- the estimate -----------------------------------------------------------------------------------


class _Value:
    """A value of the proposal, measured only when its size is needed (field selection walks it)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


Estimate = tuple[int, "Size | _Value"]


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
        self.measured: dict[int, Size] = {}  # by identity, for the duration of one estimate
        self.copies: dict[int, int] = {}
        self.over = limit + 1
        self.scale = 1  # how many times the node being walked runs: the product of the enclosing ranges

    def size(self, size: Size | _Value) -> Size:
        if not isinstance(size, _Value):
            return size
        found = self.measured.get(id(size.value))
        if found is None:
            found = self.measured[id(size.value)] = measure(size.value)
        return found

    def copy(self, size: Size | _Value) -> int:
        """What the library spends copying a value it selects or indexes: it copies the whole result (a
        map of 12,000 flags on every `flags[k]`), ~20 ns per list item, ~100 per map entry; a string is
        one `memcpy`."""
        if isinstance(size, _Value):
            found = self.copies.get(id(size.value))
            if found is None:
                found = self.copies[id(size.value)] = copy_units(size.value)
            return COPY_COST * found
        return COPY_COST * size.copy_units()

    def check(self, cost: int) -> int:
        """`cost`, unless it (times the runs of the enclosing comprehensions' bodies) is above the limit."""
        if cost * self.scale > self.limit:
            self.over = cost * self.scale
            raise _OverLimit
        return cost

    def walk(self, node: Node, env: Mapping[str, Size]) -> Estimate:
        kind = node[0]
        if kind == "lit":
            return 1, Size(count=node[1], deep=max(1, node[1]))
        if kind == "var":
            name = node[1]
            if name in env:
                return 1, env[name]
            if name in self.scope:
                return 1, _Value(self.scope[name])
            return 1, SCALAR  # an unknown name: the library raises
        if kind == "select":
            cost, size = self.walk(node[1], env)
            if isinstance(size, _Value):
                holder = size.value
                if isinstance(holder, Mapping) and node[2] in holder:
                    found = _Value(holder[node[2]])
                    return self.check(cost + 1 + self.copy(found)), found
                return cost + 1, SCALAR  # no such field: the library raises
            selected = size.select(node[2])
            return self.check(cost + 1 + self.copy(selected)), selected
        if kind == "has":
            operand = node[1]
            cost, _ = self.walk(operand[1] if operand[0] == "select" else operand, env)
            return cost + 1, SCALAR
        if kind == "index":
            (c1, s1), (c2, _) = self.walk(node[1], env), self.walk(node[2], env)
            member = self.size(s1).member()
            return self.check(c1 + c2 + 1 + self.copy(member)), member
        if kind == "list":
            parts = [(c, self.size(s)) for c, s in (self.walk(item, env) for item in node[1])]
            element = merge(s for _, s in parts)
            deep = 1 + sum(s.deep for _, s in parts)
            return 1 + sum(c for c, _ in parts), Size(count=len(parts), deep=deep, item=element, value=element)
        if kind == "map":
            keys = [(c, self.size(s)) for c, s in (self.walk(k, env) for k, _ in node[1])]
            values = [(c, self.size(s)) for c, s in (self.walk(v, env) for _, v in node[1])]
            deep = 1 + sum(s.deep for _, s in keys) + sum(s.deep for _, s in values)
            size = Size(count=len(keys), deep=deep, item=merge(s for _, s in keys), value=merge(s for _, s in values))
            return 1 + sum(c for c, _ in keys) + sum(c for c, _ in values), size
        if kind == "unary":
            cost, _ = self.walk(node[1], env)
            return cost + 1, SCALAR
        if kind == "binary":
            return self.binary(node[1], node[2], node[3], env)
        if kind == "cond":
            c0, _ = self.walk(node[1], env)
            (c1, s1), (c2, s2) = self.walk(node[2], env), self.walk(node[3], env)
            return self.check(c0 + c1 + c2 + 1), merge_two(self.size(s1), self.size(s2))
        if kind == "call":
            arguments = ([node[2]] if node[2] is not None else []) + node[3]
            parts = [(c, self.size(s)) for c, s in (self.walk(arg, env) for arg in arguments)]
            deep = sum(s.deep for _, s in parts)
            cost = 1 + sum(c for c, _ in parts) + deep + (CALLBACK_COST if node[1] in _CALLBACKS else 0)
            if node[1] == "size":
                return self.check(cost), SCALAR
            return self.check(cost), bounded(deep + 1)
        if kind == "macro":
            return self.macro(node[1], node[2], node[3], node[4], env)
        raise AssertionError(kind)  # pragma: no cover - the parser builds only the kinds above

    def binary(self, op: str, left: Node, right: Node, env: Mapping[str, Size]) -> Estimate:
        (c1, v1), (c2, v2) = self.walk(left, env), self.walk(right, env)
        cost = c1 + c2 + 1
        if op in ("&&", "||"):
            return self.check(cost), SCALAR
        s1, s2 = self.size(v1), self.size(v2)
        if op == "in":
            return self.check(cost + MEMBERSHIP_COST * s2.count + s2.deep + s1.deep), SCALAR
        if op in RELATIONS:
            return self.check(cost + COMPARISON_COST * min(s1.deep, s2.deep)), SCALAR
        if op == "+":
            element = merge_optional(s1.item, s2.item)
            size = Size(count=s1.count + s2.count, deep=s1.deep + s2.deep, item=element, value=element)
            return self.check(cost + s1.deep + s2.deep), size
        return self.check(cost), SCALAR

    def macro(self, name: str, target: Node, variable: str, body: list[Node], env: Mapping[str, Size]) -> Estimate:
        range_cost, range_value = self.walk(target, env)
        range_size = self.size(range_value)
        element = range_size.element()
        inner = {**env, variable: element}
        body_cost = 0
        body_size = SCALAR
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
            return total, Size(count=count, deep=deep, item=body_size, value=body_size)
        if name == "filter":
            return total, range_size
        return total, SCALAR


def scope_cost(variables: Mapping[str, Any]) -> int:
    """The copy size (`copy_units`) of the variables handed to the library: each run copies them
    (`SCOPE_COPY_COST` per unit), and building the context converts them once (`CONVERSION_COST` per unit)."""
    return copy_units(variables)


# -- compile ----------------------------------------------------------------------------------------


def compile_cost(source: str) -> ConditionCost:
    """The cost model of a condition (the source as the library runs it).

    Raises `CostCompileError` when the condition nests more than `MAX_INDEPENDENT_NESTING`
    comprehensions over independent ranges, `UnreadableCondition` for syntax the estimator cannot read.
    """
    tree = parse_condition(source)
    depth = _independent_nesting(tree, frozenset())
    if depth > MAX_INDEPENDENT_NESTING:
        raise CostCompileError(
            f"the condition nests {depth} comprehensions over independent lists (a cross product whose cost "
            f"grows as the power {depth} of the input); at most {MAX_INDEPENDENT_NESTING} are allowed: "
            "iterate parts of the outer element instead (x.items.exists(...)) or split the rule"
        )
    data_ranges = contains(tree, lambda n: n[0] == "macro" and not literal_list(n[2]))
    concatenations = count(tree, lambda n: n[0] == "binary" and n[1] == "+")
    grows = data_ranges or concatenations > MAX_UNESTIMATED_CONCATENATIONS
    return ConditionCost(tree=tree, needs_estimate=grows)


def _uses(node: Node, names: frozenset[str]) -> bool:
    return bool(names) and contains(node, lambda n: n[0] == "var" and n[1] in names)


def _independent_nesting(node: Node, bound: frozenset[str]) -> int:
    """The deepest chain of comprehensions each of whose range does not use an enclosing variable."""
    if node[0] != "macro":
        return max((_independent_nesting(child, bound) for child in children(node)), default=0)
    _, _, target, variable, body = node
    independent = 0 if literal_list(target) or _uses(target, bound) else 1
    inner = max((_independent_nesting(part, bound | {variable}) for part in body), default=0)
    return max(_independent_nesting(target, bound), independent + inner)
