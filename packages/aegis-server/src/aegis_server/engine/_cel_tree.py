"""CEL source read into a syntax tree of nested tuples: the whole grammar, for the cost estimator, and the
token cursor both CEL parsers (this one and the fast path's subset, `_fast_cel`) walk tokens with.

Nodes: ("lit", size) ("var", name) ("select", node, field) ("has", node) ("index", node, node)
("list", [node]) ("map", [(node, node)]) ("unary", node) ("binary", op, node, node)
("cond", node, node, node) ("call", name, target | None, [node]) ("macro", name, range, variable, [node]).
A literal keeps only its size (characters of a string, 1 otherwise): the estimator needs no more.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import cel

from ._cel_syntax import STRING_START, string_end

__all__ = [
    "RELATIONS",
    "Node",
    "TokenCursor",
    "UnreadableCondition",
    "children",
    "contains",
    "count",
    "literal_list",
    "parse_condition",
]

_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
_TOKEN = re.compile(
    r"(?P<space>\s+|//[^\n]*)"
    r"|(?P<number>(?:0[xX][0-9a-fA-F]+|\d*\.\d+(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|\d+\.?)[uU]?)"
    r"|(?P<ident>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>==|!=|<=|>=|&&|\|\||[<>!()\[\]{}.,?:+\-*/%])"
)
RELATIONS = frozenset({"==", "!=", "<", "<=", ">", ">=", "in"})
"""CEL's relational operators (one precedence level)."""
_KEYWORDS = frozenset({"true", "false", "null"})

Node = tuple[Any, ...]


class UnreadableCondition(ValueError):
    """The estimator cannot read the condition's syntax (the library accepted it)."""


class TokenCursor:
    """A position in a list of `(kind, value)` tokens, and the comma-separated lists both parsers read.

    `unreadable(message)` is the exception a parser raises where the tokens are not what it reads."""

    def __init__(self, tokens: list[tuple[str, Any]], unreadable: Callable[[str], Exception]) -> None:
        self.tokens = tokens
        self.position = 0
        self.unreadable = unreadable

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
            raise self.unreadable(f"expected {op!r}, found {value if kind != 'end' else 'the end'!r}")

    def identifier(self, problem: str) -> str:
        """The identifier at the cursor, consumed; `unreadable(problem)` when there is none."""
        kind, name = self.peek()
        if kind != "ident":
            raise self.unreadable(problem)
        self.position += 1
        return str(name)

    def group_or_list(self, token: tuple[str, Any], item: Callable[[], Node]) -> Node | None:
        """After `token` was consumed: `( item )` is the item, `[ items ]` is ("list", [items]); else None."""
        if token == ("op", "("):
            node = item()
            self.expect(")")
            return node
        if token == ("op", "["):
            return ("list", self.arguments("]", item))
        return None

    def arguments(self, close: str, item: Callable[[], Node]) -> list[Node]:
        """`item()`s separated by commas up to `close` (CEL allows a trailing comma)."""
        items: list[Node] = []
        if self.accept(close):
            return items
        while True:
            items.append(item())
            if self.accept(close):
                return items
            self.expect(",")
            if self.accept(close):
                return items


def parse_condition(source: str) -> Node:
    """The syntax tree of `source`; raises `UnreadableCondition` (also when it nests too deeply)."""
    try:
        return _Parser(_tokenize(source)).parse()
    except RecursionError:
        raise UnreadableCondition("the condition nests too deeply") from None


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


class _Parser(TokenCursor):
    """CEL's grammar (precedence from lowest: `?:`, `||`, `&&`, relations, `+ -`, `* / %`, unary, member)."""

    def __init__(self, tokens: list[tuple[str, Any]]) -> None:
        super().__init__(tokens, UnreadableCondition)

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
        RELATIONS,
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
                name = self.identifier("a field name must follow '.'")
                if self.accept("("):
                    arguments = self.arguments(")", self.expression)
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

    def primary(self) -> Node:
        kind, value = self.peek()
        self.position += 1
        if kind == "lit":
            return ("lit", value)
        if kind == "ident":
            if self.accept("("):
                return self.call(value, None, self.arguments(")", self.expression))
            return ("var", value)
        if (kind, value) == ("op", "."):  # a leading dot: `.name` is the root-scoped name
            return self.primary()
        grouped = self.group_or_list((kind, value), self.expression)
        if grouped is not None:
            return grouped
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


def children(node: Node) -> list[Node]:
    """The direct subtrees of `node`."""
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


def contains(node: Node, predicate: Callable[[Node], bool]) -> bool:
    """Whether `predicate` holds for `node` or a node below it."""
    return predicate(node) or any(contains(child, predicate) for child in children(node))


def count(node: Node, predicate: Callable[[Node], bool]) -> int:
    """How many nodes of the tree `predicate` holds for."""
    return int(predicate(node)) + sum(count(child, predicate) for child in children(node))


def literal_list(node: Node) -> bool:
    """A list literal of literals (`['eu', 'us']`): a range whose size does not depend on the proposal."""
    return node[0] == "list" and all(item[0] == "lit" for item in node[1])
