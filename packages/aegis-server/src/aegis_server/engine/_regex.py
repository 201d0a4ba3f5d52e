"""RE2 patterns, shared by CEL's `matches()` and a parameter schema's `pattern`: a bounded cache of compiled
patterns and a fast yes/no search.

RE2 runs in time linear in the text, so a pattern such as `^(a+)+$` cannot stall the server; it has no
backreferences or lookarounds (such a pattern is refused when it is compiled).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import re2

__all__ = ["compiled_regex", "regex_searcher"]

_REGEX_CACHE_SIZE = 4096

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # the library would print bad patterns to stderr; the error says it instead


@functools.lru_cache(maxsize=_REGEX_CACHE_SIZE)
def compiled_regex(pattern: str) -> Any:
    return re2.compile(pattern, _RE2_OPTIONS)


# google-re2's `search()` returns a match object: it walks a generator and maps byte offsets back to
# characters (~60% of a `matches()` call). A condition needs only a yes or no, which the compiled RE2
# answers from the UTF-8 text directly. That entry point (`_regexp.Match`) is not in the wrapper's public
# API: if a release drops it, `search()` answers instead (tests check that both agree).
_UNANCHORED = getattr(getattr(getattr(re2, "_re2", None), "RE2", None), "Anchor", None)
_NO_MATCH = (-1, -1)


@functools.lru_cache(maxsize=_REGEX_CACHE_SIZE)
def regex_searcher(pattern: str) -> Callable[[str], bool]:
    """`text -> bool`: does `pattern` match anywhere in `text` (raises `re2.error` for a bad pattern)."""
    compiled = compiled_regex(pattern)
    regexp = getattr(compiled, "_regexp", None)
    if regexp is None or _UNANCHORED is None or not hasattr(regexp, "Match"):
        return lambda text: compiled.search(text) is not None
    unanchored = _UNANCHORED.UNANCHORED

    def search(text: str) -> bool:
        data = text.encode("utf-8")
        return bool(regexp.Match(unanchored, data, 0, len(data))[0] != _NO_MATCH)

    return search
