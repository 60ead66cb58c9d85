"""How long the notifier keeps notifications, their deliveries and resends: longer than a delivery is retried and a
status link opens its page, or the notifier refuses to start."""

import pytest
from pydantic import ValidationError

from notifier.config import Settings

DAY = 86400
VARIABLES = (
    "NOTIFIER_NOTIFICATIONS_KEEP_S",
    "NOTIFIER_RETRY_FOR_S",
    "NOTIFIER_STATUS_LINK_TTL_S",
    "CREDITED_STATUS_LINK_TTL_S",
)


@pytest.fixture(autouse=True)
def unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_notifications_are_kept_90_days_by_default_and_as_long_as_the_variable_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().notifications_keep_s == 90 * DAY
    monkeypatch.setenv("NOTIFIER_NOTIFICATIONS_KEEP_S", str(40 * DAY))
    assert Settings().notifications_keep_s == 40 * DAY


def test_a_keep_time_no_longer_than_a_delivery_is_retried_is_refused_naming_both_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NOTIFIER_STATUS_LINK_TTL_S", str(DAY))
    monkeypatch.setenv("NOTIFIER_NOTIFICATIONS_KEEP_S", str(3 * DAY))  # the default retry window exactly: not longer
    with pytest.raises(ValidationError) as refused:
        Settings()
    assert "NOTIFIER_NOTIFICATIONS_KEEP_S" in str(refused.value)
    assert "NOTIFIER_RETRY_FOR_S" in str(refused.value)
    monkeypatch.setenv("NOTIFIER_NOTIFICATIONS_KEEP_S", str(3 * DAY + 1))
    assert Settings().notifications_keep_s == 3 * DAY + 1


def test_a_keep_time_no_longer_than_a_status_link_opens_its_page_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDITED_STATUS_LINK_TTL_S", str(120 * DAY))  # longer than the default keep time
    with pytest.raises(ValidationError, match=r"NOTIFIER_NOTIFICATIONS_KEEP_S .* status link"):
        Settings()
    monkeypatch.setenv("NOTIFIER_NOTIFICATIONS_KEEP_S", str(121 * DAY))
    assert Settings().notifications_keep_s == 121 * DAY


def test_a_keep_time_of_nothing_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFIER_NOTIFICATIONS_KEEP_S", "0")
    with pytest.raises(ValidationError, match="greater than 0"):
        Settings()
