import base64
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

from servicekit.http import ApiError
from servicekit.pages import Cursor, window

EARLIEST_WITH_ZONE = datetime(1, 1, 1, tzinfo=timezone(timedelta(minutes=31)))


@pytest.mark.parametrize("name", ["since", "until"])
def test_a_time_with_no_utc_equivalent_is_refused_with_400_naming_the_parameter(name: str) -> None:
    times = {"since": datetime(2026, 11, 22, tzinfo=UTC), "until": datetime(2026, 11, 23, tzinfo=UTC)}
    times[name] = EARLIEST_WITH_ZONE  # valid ISO 8601, but 31 minutes before year 1 in UTC
    with pytest.raises(ApiError) as refused:
        window(since=times["since"], until=times["until"])
    assert (refused.value.status, refused.value.code) == (400, "time_out_of_range")
    assert f"`{name}`" in refused.value.detail


def test_times_in_other_zones_come_back_in_utc() -> None:
    plus8 = timezone(timedelta(hours=8))
    got = window(since=datetime(2026, 11, 22, 8, tzinfo=plus8), until=datetime(2026, 11, 22, 9, tzinfo=plus8))
    assert (got.since, got.until) == (datetime(2026, 11, 22, 0, tzinfo=UTC), datetime(2026, 11, 22, 1, tzinfo=UTC))


@pytest.mark.parametrize("at", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"])
def test_a_cursor_whose_time_has_no_utc_equivalent_is_refused_with_400_not_left_to_the_database(at: str) -> None:
    text = base64.urlsafe_b64encode(orjson.dumps({"at": at, "id": "t1"})).decode().rstrip("=")
    with pytest.raises(ApiError) as refused:
        Cursor.decode(text)
    assert (refused.value.status, refused.value.code) == (400, "bad_cursor")
    assert Cursor.decode(Cursor(datetime(2026, 1, 1, 8, tzinfo=timezone(timedelta(hours=8))), "t1").encode()).at == (
        datetime(2026, 1, 1, tzinfo=UTC)
    )
