"""Cursor pagination: gather up to `limit` items over as many pages as that takes.

Each page asks only for what is still missing, so the cursor handed back continues exactly
after the last item returned. Providers may answer short or even empty pages that still carry
a cursor (Slack filters after paginating), hence the page cap rather than trusting progress.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

MAX_PAGES = 20


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Any]
    # Continues after this page; None (or empty) when this was the last one.
    next_cursor: str | None


def page_of(items: Any, cursor: Any) -> Page:
    """A page read from a provider's answer: anything but a list holds no items, and an
    empty or missing cursor means there is no next page."""
    return Page(items if isinstance(items, list) else [], cursor if cursor else None)


# Fetches the page at `cursor` (None: the first) holding at most `size` items.
FetchPage = Callable[[str | None, int], Awaitable[Page]]


async def collect(
    fetch: FetchPage, *, limit: int, page_size: int, cursor: str | None = None
) -> Page:
    """Up to `limit` items from consecutive pages, with the cursor that continues after them."""
    items: list[Any] = []
    for _ in range(MAX_PAGES):
        page = await fetch(cursor, min(page_size, limit - len(items)))
        items.extend(page.items)
        cursor = page.next_cursor or None
        if cursor is None or len(items) >= limit:
            break
    return Page(items, cursor)
