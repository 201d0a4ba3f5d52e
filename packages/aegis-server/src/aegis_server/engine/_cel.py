"""CEL support: compiling conditions once, the fast regex function, and static checks.

The Rust CEL library (`cel`) evaluates a compiled program in well under a microsecond, but its built-in
`matches()` recompiles the regular expression on every call (~60-160 µs here). A function registered on
the `cel.Context` cannot shadow the built-in, so at compile time every *call* of `matches` (method or
function form, outside string literals) is rewritten to `re_match`, a Python function backed by a
bounded cache of compiled RE2 patterns (google-re2, ~2 µs per call). RE2 is CEL's own dialect and runs in
time linear in the text: a pattern such as `^(a+)+$` cannot make a proposal's evaluation take exponential
time (Python's backtracking `re` took seconds for 25 characters, and would stall the server's event loop).

Search semantics, as in CEL: `text.matches(p)` is true when `p` matches anywhere in `text`; anchor with
`^...$` for a full match.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import cel
import re2

from ._cel_syntax import STRING_START, string_end
from ._cel_tree import UnreadableCondition
from ._cost import ConditionCost, CostCompileError, compile_cost
from ._fast_cel import FastCondition, compile_fast
from ._regex import compiled_regex, regex_searcher

__all__ = [
    "SCOPE_VARIABLES",
    "CompiledCondition",
    "ConditionCompileError",
    "compile_condition",
    "new_context",
    "re_match",
]

SCOPE_VARIABLES: frozenset[str] = frozenset({"actor", "action", "context", "time", "risk", "risk_level"})
"""The top-level names a condition may use."""

_MACROS = ("all", "exists", "exists_one", "map", "filter")
_MACRO_BINDING = re.compile(r"\.\s*(?:" + "|".join(_MACROS) + r")\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_REGEX_FUNCTIONS = frozenset({"matches", "re_match"})
_NUMBER = re.compile(r"0[xX][0-9a-fA-F]+[uU]?|\d*\.?\d+(?:[eE][+-]?\d+)?[uU]?")


class ConditionCompileError(ValueError):
    """A condition failed to compile; the message is the compiler's, plus a hint."""


def re_match(text: object, pattern: object) -> bool:
    """True when the regular expression `pattern` matches anywhere in `text` (CEL `matches` semantics).

    Compiled patterns are cached (LRU, 4096 entries). Errors never include the text.
    """
    if not isinstance(text, str) or not isinstance(pattern, str):
        raise TypeError(
            f"matches()/re_match() takes (string, string), got ({type(text).__name__}, "
            f"{type(pattern).__name__}); convert with string(x) or guard the field's type"
        )
    try:
        search = regex_searcher(pattern)
    except re2.error as exc:
        # RE2 words the error as "<what>: <the pattern>", and the pattern can be a parameter value (the
        # library also prints this message to stderr): keep only what is wrong.
        detail = exc.args[0] if exc.args else ""
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        what = str(detail).split(":", 1)[0].strip() or "not valid RE2 syntax"
        raise ValueError(f"invalid regular expression ({what}); the pattern is not repeated here") from None
    return search(text)


_FUNCTIONS: dict[str, Callable[..., Any]] = {"re_match": re_match}


def new_context(variables: dict[str, Any]) -> cel.Context:
    """A fresh evaluation context holding `variables` and the engine's functions."""
    return cel.Context(variables=variables, functions=_FUNCTIONS)


@dataclass(frozen=True)
class CompiledCondition:
    """A compiled condition. `always_true` skips evaluation for the literal `true`."""

    source: str
    program: Any  # cel.Program (the library is untyped for mypy)
    variables: frozenset[str]
    always_true: bool
    paths: Mapping[str, frozenset[tuple[str, ...]]]
    """Per scope variable, the field paths the condition reads (`()` = the whole value)."""
    fast: FastCondition | None = None
    """The condition compiled to Python (`_fast_cel`), or None when it is outside that subset."""
    cost: ConditionCost | None = None
    """The cost model (`_cost`), estimated before the library runs the condition; None only when the
    estimator cannot read the condition and it neither iterates nor concatenates."""


def _rewrite_regex_calls(source: str) -> tuple[str, list[str]]:
    """Rewrite calls of `matches` to `re_match` outside string literals.

    Returns the rewritten source and the literal patterns passed as the only argument of a method-form
    call (`x.matches('...')`), so they can be checked at load time.
    """
    out: list[str] = []
    literals: list[str] = []
    i = 0
    n = len(source)
    while i < n:
        ch = source[i]
        string_start = STRING_START.match(source, i)
        if string_start and (i == 0 or not (source[i - 1].isalnum() or source[i - 1] == "_")):
            end = string_end(source, string_start)
            out.append(source[i:end])
            i = end
            continue
        if ch.isalpha() or ch == "_":
            ident = _IDENT.match(source, i)
            assert ident is not None
            name = ident.group(0)
            j = ident.end()
            while j < n and source[j].isspace():
                j += 1
            is_call = j < n and source[j] == "("
            if is_call and name in _REGEX_FUNCTIONS:
                out.append("re_match")
                literal = _single_literal_argument(source, j + 1)
                if literal is not None:
                    literals.append(literal)
            else:
                out.append(name)
            i = ident.end()
            continue
        out.append(ch)
        i += 1
    return "".join(out), literals


def _single_literal_argument(source: str, i: int) -> str | None:
    """If the call whose `(` ends just before `i` has exactly one string-literal argument, return its text."""
    n = len(source)
    while i < n and source[i].isspace():
        i += 1
    start = STRING_START.match(source, i)
    if not start:
        return None
    end = string_end(source, start)
    j = end
    while j < n and source[j].isspace():
        j += 1
    if j < n and source[j] == ")":
        return source[i:end]
    return None


def _bound_names(source: str) -> set[str]:
    return set(_MACRO_BINDING.findall(source))


def compile_condition(source: str) -> CompiledCondition:
    """Compile a CEL condition once, with static checks.

    Raises `ConditionCompileError` for a syntax error, an unknown top-level variable (with the nearest
    scope name) or a literal regular expression that does not compile.
    """
    stripped = source.strip()
    if not stripped:
        raise ConditionCompileError("the condition is empty; write `true` to match every proposal")
    try:
        program = cel.compile(stripped)
    except (ValueError, RuntimeError, TypeError) as exc:
        raise ConditionCompileError(f"CEL syntax error: {exc}") from None
    rewritten, literals = _rewrite_regex_calls(stripped)
    if rewritten != stripped:
        try:
            program = cel.compile(rewritten)
        except (ValueError, RuntimeError, TypeError) as exc:  # pragma: no cover - the original compiled
            raise ConditionCompileError(f"CEL compile error: {exc}") from None
    referenced = set(program.variables())
    unknown = sorted(referenced - SCOPE_VARIABLES - _bound_names(rewritten))
    if unknown:
        name = unknown[0]
        close = difflib.get_close_matches(name, sorted(SCOPE_VARIABLES), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConditionCompileError(
            f"unknown variable '{name}'{hint}; a condition can use {', '.join(sorted(SCOPE_VARIABLES))}"
        )
    for literal in literals:
        try:
            pattern = cel.evaluate(literal)
        except (ValueError, RuntimeError, TypeError):  # pragma: no cover - it compiled as part of the source
            continue
        if isinstance(pattern, str):
            try:
                compiled_regex(pattern)
            except re2.error as exc:
                raise ConditionCompileError(f"invalid regular expression {pattern!r}: {exc}") from None
    variables = frozenset(referenced & SCOPE_VARIABLES)
    cost: ConditionCost | None = None
    try:
        cost = compile_cost(rewritten)
    except UnreadableCondition as exc:
        if _could_grow(rewritten):
            raise ConditionCompileError(
                f"the cost of this condition cannot be estimated ({exc}), and it iterates or concatenates; "
                "write it with the standard CEL operators and macros (all, exists, exists_one, map, filter)"
            ) from None
    except CostCompileError as exc:
        raise ConditionCompileError(str(exc)) from None
    return CompiledCondition(
        source=stripped,
        program=program,
        variables=variables,
        always_true=stripped == "true",
        paths=_access_paths(rewritten, variables),
        fast=compile_fast(rewritten, regex_searcher),
        cost=cost,
    )


def _could_grow(source: str) -> bool:
    """A condition the estimator could not read: does it (outside string literals) iterate or concatenate?"""
    tokens = _tokens(source)
    return "+" in tokens or any(token in _MACROS for token in tokens)


def _tokens(source: str) -> list[str]:
    """A coarse CEL lexer: identifiers, '.', '(' and '[' matter; literals become placeholders."""
    tokens: list[str] = []
    i = 0
    n = len(source)
    while i < n:
        ch = source[i]
        if ch.isspace():
            i += 1
            continue
        string_start = STRING_START.match(source, i)
        if string_start and (i == 0 or not (source[i - 1].isalnum() or source[i - 1] == "_")):
            i = string_end(source, string_start)
            tokens.append("<literal>")
            continue
        number = _NUMBER.match(source, i) if (ch.isdigit() or (ch == "." and source[i + 1 : i + 2].isdigit())) else None
        if number:
            i = number.end()
            tokens.append("<literal>")
            continue
        if ch.isalpha() or ch == "_":
            ident = _IDENT.match(source, i)
            assert ident is not None
            tokens.append(ident.group(0))
            i = ident.end()
            continue
        tokens.append(ch)
        i += 1
    return tokens


def _access_paths(source: str, variables: frozenset[str]) -> dict[str, frozenset[tuple[str, ...]]]:
    """Which fields of each scope variable the condition can read.

    A path is the longest chain of `.field` selections after the variable, stopping before a method
    call (`.matches(`, `.exists(`...) or an index (`[`), so the value at the end of the path is passed
    whole. A variable used bare (`size(action.parameters)`, `risk`), or one whose name a macro rebinds,
    needs its whole value: the path `()`.
    """
    tokens = _tokens(source)
    paths: dict[str, set[tuple[str, ...]]] = {name: set() for name in variables}
    shadowed = _bound_names(source) & variables
    for name in shadowed:
        paths[name].add(())
    count = len(tokens)
    for i, token in enumerate(tokens):
        if token not in paths or token in shadowed or (i > 0 and tokens[i - 1] == "."):
            continue
        path: list[str] = []
        j = i + 1
        while j + 1 < count and tokens[j] == "." and _IDENT.fullmatch(tokens[j + 1]):
            if j + 2 < count and tokens[j + 2] == "(":
                break  # a method call receives the value so far
            path.append(tokens[j + 1])
            j += 2
        paths[token].add(tuple(path))
    return {name: frozenset(found) for name, found in paths.items()}
