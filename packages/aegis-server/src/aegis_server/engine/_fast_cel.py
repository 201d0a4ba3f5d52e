"""The engine's fast path: common CEL conditions compiled to Python closures.

A condition run by the `cel` library costs a context (each variable converted to a CEL value, about
1 µs per value) plus a call into the library per rule. Most policy conditions are field tests: `has()`,
comparisons, `in [...]`, `matches` and the string methods, joined by `&&`, `||`, `!` and `?:`. This module
parses that subset and compiles it to closures over the proposal's plain Python values.

The library stays the reference. A closure answers only where its answer is certain to be the
library's; anywhere else (a missing field, a value of a type the subset does not compare, a non-boolean
operand, an integer beyond 2**53 beside a double) it raises `Undecided`, and the engine runs the library
program instead, so errors, messages and edge cases are exactly the library's. A condition outside the
subset (arithmetic, macros, indexes, maps, other functions) is not compiled here at all. The tests
compare both paths on generated conditions and values.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import cel

from ._cel_syntax import STRING_START, string_end
from ._cel_tree import RELATIONS, TokenCursor

__all__ = ["FastCondition", "Undecided", "compile_fast"]

Scope = Mapping[str, Any]
FastCondition = Callable[[Scope], Any]

_TOKEN = re.compile(
    r"(?P<space>\s+)"
    r"|(?P<number>(?:0[xX][0-9a-fA-F]+|\d*\.\d+(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|\d+)[uU]?)"
    r"|(?P<ident>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>==|!=|<=|>=|&&|\|\||[<>!()\[\]{}.,?:+\-*/%])"
)
_LITERAL_WORDS: dict[str, Any] = {"true": True, "false": False, "null": None}
_ORDERINGS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_STRING_METHODS: dict[str, Callable[[str, str], bool]] = {
    "startsWith": str.startswith,
    "endsWith": str.endswith,
    "contains": str.__contains__,
}
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_MISSING = object()
_EXACT_IN_DOUBLE = 2**53


class Undecided(Exception):
    """The fast path cannot be sure of the library's answer; evaluate with the library."""


class _Unsupported(Exception):
    """The condition is outside the subset this module compiles."""


def compile_fast(source: str, searcher: Callable[[str], Callable[[str], bool]]) -> FastCondition | None:
    """A closure deciding `source` (already rewritten to `re_match`), or None when it is outside the subset.

    `searcher(pattern)` returns the compiled regex test the library's `re_match` uses.
    """
    try:
        tokens = _tokenize(source)
        parser = _Parser(tokens)
        node = parser.expression()
        if parser.position != len(tokens):
            return None
        return _Compiler(searcher).compile(node)
    except _Unsupported:
        return None


# Tokens ------------------------------------------------------------------------------------------


def _literal_value(text: str) -> Any:
    """The value of a literal as the library reads it (escapes, raw strings, hex and exponents)."""
    try:
        return cel.evaluate(text)
    except Exception:  # anything the library refuses is outside the subset
        raise _Unsupported(text) from None


def _tokenize(source: str) -> list[tuple[str, Any]]:
    tokens: list[tuple[str, Any]] = []
    i, n = 0, len(source)
    while i < n:
        string_start = STRING_START.match(source, i)
        if string_start:
            end = string_end(source, string_start)
            if "b" in string_start.group(0).lower():
                raise _Unsupported("bytes literal")
            tokens.append(("literal", _literal_value(source[i:end])))
            i = end
            continue
        if source.startswith("//", i):
            raise _Unsupported("comment")
        match = _TOKEN.match(source, i)
        if match is None:
            raise _Unsupported(source[i])
        kind = match.lastgroup
        text = match.group(0)
        i = match.end()
        if kind == "number":
            if text[-1] in "uU":
                raise _Unsupported("unsigned literal")
            tokens.append(("number", text))
        elif kind == "ident":
            if text in _LITERAL_WORDS:
                tokens.append(("literal", _LITERAL_WORDS[text]))
            elif text == "in":
                tokens.append(("op", "in"))
            else:
                tokens.append(("ident", text))
        elif kind == "op":
            tokens.append(("op", text))
    return tokens


# Syntax tree: nested tuples, ("kind", ...) -----------------------------------------------------------


class _Parser(TokenCursor):
    """Recursive descent over CEL's grammar; precedence from lowest: `?:`, `||`, `&&`, relations, unary."""

    def __init__(self, tokens: list[tuple[str, Any]]) -> None:
        super().__init__(tokens, _Unsupported)

    def expression(self) -> tuple[Any, ...]:
        condition = self._or()
        if self.accept("?"):
            then = self._or()
            self.expect(":")
            return ("cond", condition, then, self.expression())
        return condition

    def _or(self) -> tuple[Any, ...]:
        node = self._and()
        while self.accept("||"):
            node = ("or", node, self._and())
        return node

    def _and(self) -> tuple[Any, ...]:
        node = self._relation()
        while self.accept("&&"):
            node = ("and", node, self._relation())
        return node

    def _relation(self) -> tuple[Any, ...]:
        node = self._unary()
        while True:
            kind, value = self.peek()
            if kind != "op" or value not in RELATIONS:
                break
            self.position += 1
            node = ("relation", value, node, self._unary())
        kind, value = self.peek()
        if kind == "op" and value in "+-*/%":
            raise _Unsupported("arithmetic")
        return node

    def _unary(self) -> tuple[Any, ...]:
        if self.accept("!"):
            return ("not", self._unary())
        if self.accept("-"):
            kind, text = self.peek()
            if kind != "number":
                raise _Unsupported("negation of something that is not a number literal")
            self.position += 1
            return ("literal", _literal_value("-" + text))  # -9223372036854775808 exists, its negation not
        return self._member()

    def _member(self) -> tuple[Any, ...]:
        node = self._primary()
        while True:
            if self.accept("."):
                name = self.identifier("selection")
                is_call = self.accept("(")
                node = ("call", name, node, self.arguments(")", self.expression)) if is_call else ("select", node, name)
            elif self.peek() in (("op", "["), ("op", "(")):
                raise _Unsupported("index or call of a value")
            else:
                return node

    def _primary(self) -> tuple[Any, ...]:
        kind, value = self.peek()
        self.position += 1
        if kind == "literal":
            return ("literal", value)
        if kind == "number":
            return ("literal", _literal_value(value))
        if kind == "ident":
            if self.accept("("):
                return ("call", value, None, self.arguments(")", self.expression))
            return ("var", value)
        grouped = self.group_or_list((kind, value), self.expression)
        if grouped is not None:
            return grouped
        raise _Unsupported(f"{kind} {value!r}")


# Values -------------------------------------------------------------------------------------------


def _kind(value: Any) -> str:
    """The CEL type of a plain value the fast path compares, or raise `Undecided`."""
    kind = type(value)
    if kind is str:
        _string(value)
        return "string"
    if kind is bool:
        return "bool"
    if kind is int and _INT64_MIN <= value <= _INT64_MAX:
        return "int"
    if kind is float and math.isfinite(value):
        return "double"
    if value is None:
        return "null"
    raise Undecided


def _mixed_numbers(left: Any, left_kind: str, right: Any, right_kind: str) -> bool:
    """True for an int beside a double whose comparison Python and the library agree on: the int at most
    2**53 in size, so that it is exact as a double (larger ones are `Undecided`)."""
    if {left_kind, right_kind} != {"int", "double"}:
        return False
    integer = left if left_kind == "int" else right
    if abs(integer) > _EXACT_IN_DOUBLE:
        raise Undecided
    return True


def _equal(left: Any, right: Any) -> bool:
    left_kind, right_kind = _kind(left), _kind(right)
    if left_kind == right_kind or _mixed_numbers(left, left_kind, right, right_kind):
        return bool(left == right)
    return False  # the library's equality across types is false, not an error


def _ordered(compare: Callable[[Any, Any], bool], left: Any, right: Any) -> bool:
    left_kind, right_kind = _kind(left), _kind(right)
    if left_kind == right_kind and left_kind in ("int", "double", "string"):
        return compare(left, right)
    if _mixed_numbers(left, left_kind, right, right_kind):
        return compare(left, right)
    raise Undecided


def _boolean(value: Any) -> bool:
    if value is True or value is False:
        return value
    raise Undecided


def _walk(value: Any, fields: Sequence[str]) -> Any:
    for name in fields:
        if type(value) is not dict:
            raise Undecided
        value = value.get(name, _MISSING)
        if value is _MISSING:
            raise Undecided
    return value


def _path(variable: str, fields: tuple[str, ...]) -> FastCondition:
    """`variable.field...`: one closure per path; paths of one or two fields (`actor.id`,
    `action.parameters.amount`) are unrolled, as field selection is most of what a condition does."""
    if len(fields) == 1:
        (field,) = fields

        def read_one(scope: Scope) -> Any:
            value = scope[variable]
            if type(value) is dict:
                value = value.get(field, _MISSING)
                if value is not _MISSING:
                    return value
            raise Undecided

        return read_one
    if len(fields) == 2:
        first, second = fields

        def read_two(scope: Scope) -> Any:
            value = scope[variable]
            if type(value) is dict:
                value = value.get(first, _MISSING)
                if type(value) is dict:
                    value = value.get(second, _MISSING)
                    if value is not _MISSING:
                        return value
            raise Undecided

        return read_two
    return lambda scope: _walk(scope[variable], fields)


# Closures -----------------------------------------------------------------------------------------


class _Compiler:
    def __init__(self, searcher: Callable[[str], Callable[[str], bool]]) -> None:
        self._searcher = searcher

    def compile(self, node: tuple[Any, ...]) -> FastCondition:
        kind = node[0]
        if kind == "literal":
            value = node[1]
            return lambda scope: value
        if kind == "var":
            name = node[1]
            return lambda scope: scope[name]
        if kind == "select":
            fields: list[str] = []
            while node[0] == "select":
                fields.append(node[2])
                node = node[1]
            fields.reverse()
            if node[0] == "var":
                return _path(node[1], tuple(fields))
            target = self.compile(node)
            return lambda scope: _walk(target(scope), fields)
        if kind == "list":
            items = [self.compile(item) for item in node[1]]
            return lambda scope: [item(scope) for item in items]
        if kind == "not":
            operand = self.compile(node[1])
            return lambda scope: not _boolean(operand(scope))
        if kind in ("and", "or"):
            return self._logical(kind, self.compile(node[1]), self.compile(node[2]))
        if kind == "cond":
            test, then, otherwise = (self.compile(part) for part in node[1:])
            return lambda scope: then(scope) if _boolean(test(scope)) else otherwise(scope)
        if kind == "relation":
            return self._relation(node[1], node[2], node[3])
        if kind == "call":
            return self._call(node[1], node[2], node[3])
        raise _Unsupported(kind)  # pragma: no cover - the parser builds only the kinds above

    @staticmethod
    def _logical(kind: str, left: FastCondition, right: FastCondition) -> FastCondition:
        # Left to right with short-circuit. An operand the fast path cannot decide makes the whole
        # condition undecided: the library then applies CEL's rule that `false && error` is false.
        stop = kind != "and"  # the left value that decides alone: false for &&, true for ||
        go_on = not stop

        def logical(scope: Scope) -> bool:
            first = left(scope)
            if first is stop:
                return not go_on
            if first is not go_on:
                raise Undecided
            second = right(scope)
            if second is True:
                return True
            if second is False:
                return False
            raise Undecided

        return logical

    def _relation(self, op: str, left_node: tuple[Any, ...], right_node: tuple[Any, ...]) -> FastCondition:
        left, right = self.compile(left_node), self.compile(right_node)
        if op in ("==", "!=") and "literal" in (left_node[0], right_node[0]):
            literal, other = (right_node[1], left) if right_node[0] == "literal" else (left_node[1], right)
            if type(literal) is str:
                # The common `field == 'text'`: an ASCII string needs none of _equal's type checks.
                def equal_text(scope: Scope) -> bool:
                    value = other(scope)
                    if type(value) is str and value.isascii():
                        return value == literal
                    return _equal(value, literal)

                return equal_text if op == "==" else lambda scope: not equal_text(scope)
        if op == "==":
            return lambda scope: _equal(left(scope), right(scope))
        if op == "!=":
            return lambda scope: not _equal(left(scope), right(scope))
        if op == "in":
            if right_node[0] != "list":
                raise _Unsupported("`in` on a value that is not a list literal")
            if all(item[0] == "literal" for item in right_node[1]):
                values = tuple(item[1] for item in right_node[1])
                if values and all(type(value) is str for value in values):
                    texts = frozenset(values)

                    def in_texts(scope: Scope) -> bool:
                        value = left(scope)
                        if type(value) is str and value.isascii():
                            return value in texts
                        return _member_of(value, values)

                    return in_texts
                return lambda scope: _member_of(left(scope), values)
            return lambda scope: _member_of(left(scope), right(scope))
        compare = _ORDERINGS[op]
        return lambda scope: _ordered(compare, left(scope), right(scope))

    def _call(self, name: str, target_node: tuple[Any, ...] | None, argument_nodes: list[Any]) -> FastCondition:
        if name == "has" and target_node is None:
            if len(argument_nodes) != 1 or argument_nodes[0][0] != "select":
                raise _Unsupported("has() of something that is not a field selection")
            _, holder_node, field = argument_nodes[0]
            holder = self.compile(holder_node)
            return lambda scope: _has(holder(scope), field)
        if name == "re_match":
            if target_node is not None:
                argument_nodes = [target_node, *argument_nodes]
            if len(argument_nodes) != 2 or argument_nodes[1][0] != "literal" or type(argument_nodes[1][1]) is not str:
                raise _Unsupported("re_match() without a literal pattern")
            try:
                search = self._searcher(argument_nodes[1][1])
            except Exception:  # a bad pattern is the library's error to report, at run time
                raise _Unsupported("invalid pattern") from None
            text = self.compile(argument_nodes[0])

            def matches(scope: Scope) -> bool:
                value = text(scope)
                return search(value if type(value) is str and value.isascii() else _string(value))

            return matches
        if name == "size" and len(argument_nodes) + (target_node is not None) == 1:
            collection = self.compile(target_node if target_node is not None else argument_nodes[0])
            return lambda scope: _size(collection(scope))
        method = _STRING_METHODS.get(name)
        if method is not None and target_node is not None and len(argument_nodes) == 1:
            text, other = self.compile(target_node), self.compile(argument_nodes[0])
            return lambda scope: method(_string(text(scope)), _string(other(scope)))
        raise _Unsupported(f"function {name}")


def _has(holder: Any, field: str) -> bool:
    if type(holder) is not dict:
        raise Undecided
    return field in holder


def _string(value: Any) -> str:
    """`value` when it is a string the library can hold (UTF-8: no lone surrogates), else `Undecided`."""
    if type(value) is not str:
        raise Undecided
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise Undecided from None
    return value


def _size(value: Any) -> int:
    # Lists and maps only: the library's size() of a string counts UTF-8 bytes, not characters.
    if type(value) is not list and type(value) is not dict:
        raise Undecided
    return len(value)


def _member_of(value: Any, items: Sequence[Any]) -> bool:
    return any(_equal(value, item) for item in items)
