"""Cursor paging of listings (`client.decisions.list()`, `client.audit.log()`).

A `Pager` holds the state of one listing (buffered items, the next cursor, the cursors already seen) and
builds the request for the next page; `SyncPageIterator` and `AsyncPageIterator` only fetch the pages it
asks for, so every item of every page is yielded once and a looping cursor stops the iteration."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

import httpx

from aegis_sdk._parsing import items_of, json_body, malformed
from aegis_sdk._request import AsyncSender, Call, SyncSender
from aegis_sdk._validation import list_params
from aegis_sdk.errors import MalformedResponseError

T = TypeVar("T")
C = TypeVar("C")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


@dataclass
class Pager(Generic[T]):
    """State of one auto-paging listing (shared by the sync and the async iterator)."""

    build: Callable[[str | None], Call[Page[T]]]
    buffer: deque[T] = field(default_factory=deque)
    cursor: str | None = None
    done: bool = False
    seen: set[str] = field(default_factory=set)

    def next_call(self) -> Call[Page[T]] | None:
        """The request for the next page, or None while items are buffered or when every page was read."""
        if self.buffer or self.done:
            return None
        return self.build(self.cursor)

    def pop(self, exhausted: type[Exception]) -> T:
        """The next buffered item; raises `exhausted` (StopIteration or StopAsyncIteration) after the last."""
        if not self.buffer:
            raise exhausted
        return self.buffer.popleft()

    def accept(self, page: Page[T]) -> None:
        self.buffer.extend(page.items)
        cursor = page.next_cursor
        if not cursor:
            self.done = True
            return
        if cursor in self.seen:
            self.done = True
            raise MalformedResponseError(
                "The platform returned a page cursor it had already returned; stopping instead of looping forever.",
                code="cursor_loop",
            )
        self.seen.add(cursor)
        self.cursor = cursor


def page_parser(item: Callable[[object, httpx.Response], T]) -> Callable[[httpx.Response], Page[T]]:
    def parse(response: httpx.Response) -> Page[T]:
        body = json_body(response)
        items = items_of(body, response, "page")
        cursor = body.get("next_cursor") if isinstance(body, dict) else None
        if cursor is not None and not isinstance(cursor, str):
            raise malformed(response, "page", "next_cursor is not a string")
        return Page([item(obj, response) for obj in items], cursor or None)

    return parse


def listing_pager(
    operation: str,
    path: str,
    item: Callable[[object, httpx.Response], T],
    filters: Mapping[str, str | None],
    *,
    since: str | datetime | None,
    until: str | datetime | None,
    limit: int | None,
) -> Pager[T]:
    """The pager of a GET listing at `path`; the filters are checked now, before the first page is asked for."""
    list_params(limit=limit, cursor=None, since=since, until=until, **filters)
    parse = page_parser(item)

    def build(cursor: str | None) -> Call[Page[T]]:
        params = list_params(limit=limit, cursor=cursor, since=since, until=until, **filters)
        return Call("GET", path, parse, params=params, operation=operation)

    return Pager(build)


class _PageIterator(Generic[C, T]):
    def __init__(self, client: C, pager: Pager[T]) -> None:
        self._client = client
        self._pager = pager


class SyncPageIterator(_PageIterator[SyncSender, T]):
    """Iterates every item of a listing, fetching the next page only when needed."""

    def __iter__(self) -> SyncPageIterator[T]:
        return self

    def __next__(self) -> T:
        while (call := self._pager.next_call()) is not None:
            self._pager.accept(self._client._request(call))
        return self._pager.pop(StopIteration)


class AsyncPageIterator(_PageIterator[AsyncSender, T]):
    """Iterates (`async for`) every item of a listing, fetching the next page only when needed."""

    def __aiter__(self) -> AsyncPageIterator[T]:
        return self

    async def __anext__(self) -> T:
        while (call := self._pager.next_call()) is not None:
            self._pager.accept(await self._client._request(call))
        return self._pager.pop(StopAsyncIteration)


__all__ = ["AsyncPageIterator", "Page", "Pager", "SyncPageIterator", "listing_pager", "page_parser"]
