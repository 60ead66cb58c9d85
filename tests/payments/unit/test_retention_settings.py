"""How long payments keeps refused callbacks and order Idempotency-Keys: a key must outlive every order that can
still be paid, or a client's retry would place a second order while the first can still take the money."""

import pytest
from pydantic import ValidationError

from payments.config import Settings

DAY = 86400
VARIABLES = (
    "PAYMENTS_REFUSED_CALLBACKS_KEEP_S",
    "PAYMENTS_IDEMPOTENCY_KEYS_KEEP_S",
    "PAYMENTS_PAYMENT_EXPIRY_S",
    "PAYMENTS_PAYMENT_EXPIRY_BY_CHANNEL",
    "PAYMENTS_QUERY_UNKNOWN_ORDER_FOR_S",
)


@pytest.fixture(autouse=True)
def unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_refused_callbacks_are_kept_30_days_and_idempotency_keys_7_by_default() -> None:
    settings = Settings()
    assert settings.refused_callbacks_keep_s == 30 * DAY
    assert settings.idempotency_keys_keep_s == 7 * DAY
    assert settings.payable_for_s == 1800 + 7200  # the default expiry, then the unknown-order window


def test_the_keep_times_are_read_from_their_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYMENTS_REFUSED_CALLBACKS_KEEP_S", str(90 * DAY))
    monkeypatch.setenv("PAYMENTS_IDEMPOTENCY_KEYS_KEEP_S", str(2 * DAY))
    assert (Settings().refused_callbacks_keep_s, Settings().idempotency_keys_keep_s) == (90 * DAY, 2 * DAY)


def test_idempotency_keys_kept_no_longer_than_an_order_stays_payable_are_refused_naming_the_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PAYMENTS_QUERY_UNKNOWN_ORDER_FOR_S", str(3 * DAY))
    monkeypatch.setenv("PAYMENTS_IDEMPOTENCY_KEYS_KEEP_S", str(3 * DAY + 1800))  # expiry + window exactly: not longer
    with pytest.raises(ValidationError) as refused:
        Settings()
    assert "PAYMENTS_IDEMPOTENCY_KEYS_KEEP_S" in str(refused.value)
    assert "PAYMENTS_QUERY_UNKNOWN_ORDER_FOR_S" in str(refused.value)
    monkeypatch.setenv("PAYMENTS_IDEMPOTENCY_KEYS_KEEP_S", str(3 * DAY + 1801))
    assert Settings().idempotency_keys_keep_s == 3 * DAY + 1801


def test_the_longest_expiry_of_any_channel_counts_for_how_long_an_order_stays_payable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PAYMENTS_PAYMENT_EXPIRY_BY_CHANNEL", f'{{"wechat": 900, "bank": {6 * DAY}}}')
    monkeypatch.setenv("PAYMENTS_IDEMPOTENCY_KEYS_KEEP_S", str(6 * DAY))
    with pytest.raises(ValidationError, match="PAYMENTS_IDEMPOTENCY_KEYS_KEEP_S"):
        Settings()
    monkeypatch.setenv("PAYMENTS_IDEMPOTENCY_KEYS_KEEP_S", str(6 * DAY + 7201))
    assert Settings().payable_for_s == 6 * DAY + 7200


@pytest.mark.parametrize("variable", ["PAYMENTS_REFUSED_CALLBACKS_KEEP_S", "PAYMENTS_IDEMPOTENCY_KEYS_KEEP_S"])
def test_nothing_is_kept_less_than_a_day(variable: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYMENTS_QUERY_UNKNOWN_ORDER_FOR_S", "0")
    monkeypatch.setenv("PAYMENTS_PAYMENT_EXPIRY_S", "60")
    monkeypatch.setenv(variable, str(DAY - 1))
    with pytest.raises(ValidationError, match="greater than or equal to 86400"):
        Settings()
