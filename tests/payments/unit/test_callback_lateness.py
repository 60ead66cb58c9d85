"""The paid callbacks' lateness the query worker waits out: a high share of the recent ones, none when none came."""

import pytest

from payments.lateness import CallbackLateness


def test_no_paid_callback_in_the_window_means_no_lateness() -> None:
    lateness = CallbackLateness(window_s=10)
    assert lateness.seconds(1_000.0) == 0.0
    lateness.observe(arrived_at=1_000.0, paid_at=997.0)
    assert lateness.seconds(1_010.5) == 0.0


def test_the_lateness_is_what_three_in_four_recent_callbacks_stayed_within_not_the_slowest() -> None:
    lateness = CallbackLateness(window_s=10)
    for n in range(100):
        lateness.observe(arrived_at=1_000.0, paid_at=1_000.0 - n / 10)  # 0.0 to 9.9 s late
    lateness.observe(arrived_at=1_000.0, paid_at=400.0)  # one callback ten minutes late
    assert lateness.seconds(1_001.0) == pytest.approx(7.5)


def test_old_callbacks_leave_the_window_and_a_paid_at_ahead_of_the_arrival_is_on_time() -> None:
    lateness = CallbackLateness(window_s=10)
    for _ in range(50):
        lateness.observe(arrived_at=1_000.0, paid_at=994.0)  # 6 s late, a backlog
    for _ in range(50):
        lateness.observe(arrived_at=1_008.0, paid_at=1_009.0)  # stated a second ahead
    assert lateness.seconds(1_008.0) == 6.0
    assert lateness.seconds(1_011.0) == 0.0


def test_at_a_peak_the_latest_callbacks_stand_for_the_window() -> None:
    lateness = CallbackLateness(window_s=10, kept=10)
    for _ in range(10):
        lateness.observe(arrived_at=1_000.0, paid_at=990.0)
    for _ in range(10):
        lateness.observe(arrived_at=1_001.0, paid_at=1_000.5)
    assert lateness.seconds(1_001.0) == 0.5


def test_a_window_without_room_or_a_quantile_outside_one_is_refused() -> None:
    for bad in ({"window_s": 0}, {"kept": 0}, {"quantile": 0}, {"quantile": 1.5}):
        with pytest.raises(ValueError, match="callback lateness"):
            CallbackLateness(**bad)  # type: ignore[arg-type]


def test_a_payment_stated_in_whole_seconds_counts_from_its_orders_placing_when_that_came_later() -> None:
    lateness = CallbackLateness(window_s=10, quantile=1.0)
    # Placed at .8 of a second, paid within it (stated .0): 0.4 s late, not 1.2 s.
    lateness.observe(arrived_at=1_001.2, paid_at=1_000.0, placed_at=1_000.8)
    assert lateness.seconds(1_001.2) == pytest.approx(0.4)
    # Placed the second before: the stated paid_at is the nearer bound.
    lateness.observe(arrived_at=1_001.2, paid_at=1_000.0, placed_at=999.5)
    assert lateness.seconds(1_001.2) == pytest.approx(1.2)
