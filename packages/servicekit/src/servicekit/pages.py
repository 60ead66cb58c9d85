"""Keyset pages of a time window: `since <= at < until`, ordered by (time, id), the next page after a cursor.

A cursor names the last row a page gave (its time and id), so the next page starts right after it whatever was
written meanwhile: no row is skipped or given twice because rows before it appeared or went (as OFFSET would),
and each page is one index range scan however deep into the window it is. The cursor is opaque to clients
(url-safe base64 of JSON) and refused with a 400 naming the problem when it is not one we gave.
"""

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

import orjson
from fastapi import Query

from servicekit.http import ApiError

MAX_LIMIT = 5000
MAX_WINDOW = timedelta(days=31)


@dataclass(frozen=True, slots=True)
class Cursor:
    """The last row a page gave: its time and id."""

    at: datetime
    id: str

    def encode(self) -> str:
        raw = orjson.dumps({"at": self.at.isoformat(), "id": self.id})
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> "Cursor":
        try:
            raw = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
            at = datetime.fromisoformat(raw["at"])
            if at.tzinfo is not None:
                at = at.astimezone(UTC)  # a time UTC cannot hold (year 1 east of UTC) is no cursor a page gave
            cursor = cls(at, str(raw["id"]))
        except (binascii.Error, orjson.JSONDecodeError, KeyError, TypeError, ValueError, OverflowError):
            raise ApiError(400, "bad_cursor", "`after` is not a cursor a page of this endpoint gave") from None
        if at.tzinfo is None or "\x00" in cursor.id:  # PostgreSQL text holds no NUL: it would refuse the query
            raise ApiError(400, "bad_cursor", "`after` is not a cursor a page of this endpoint gave")
        return cursor


@dataclass(frozen=True, slots=True)
class Window:
    """One page's request: rows with `since <= time < until`, after `after`, at most `limit`."""

    since: datetime
    until: datetime
    after: Cursor
    limit: int


def window(
    since: Annotated[datetime, Query(description="Rows at or after this time (ISO 8601 with its zone).")],
    until: Annotated[datetime, Query(description="Rows before this time (ISO 8601 with its zone).")],
    after: Annotated[str | None, Query(max_length=400, description="The `next` cursor of the previous page.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Rows in this page at most.")] = 1000,
) -> Window:
    """The query parameters of a windowed page (a FastAPI dependency)."""
    times = []
    for name, value in (("since", since), ("until", until)):
        if value.tzinfo is None:
            raise ApiError(400, "naive_time", f"`{name}` needs its zone, e.g. 2026-11-22T08:00:00+00:00")
        try:
            times.append(value.astimezone(UTC))
        except OverflowError:  # 0001-01-01T00:00:00+00:31 is a valid ISO time with no UTC equivalent
            raise ApiError(400, "time_out_of_range", f"`{name}` in UTC is before year 1 or after 9999") from None
    since, until = times
    if until <= since:
        raise ApiError(400, "empty_window", "`until` must be after `since`")
    if until - since > MAX_WINDOW:
        raise ApiError(400, "window_too_long", f"a window is {MAX_WINDOW.days} days at most")
    start = Cursor(since, "") if after is None else Cursor.decode(after)
    return Window(since, until, start, limit)


def next_cursor(rows: list[tuple[datetime, str]], limit: int) -> str | None:
    """The cursor of the page after these (time, id) rows, or None when this page was the last."""
    if len(rows) < limit:
        return None
    at, key = rows[-1]
    return Cursor(at, key).encode()
