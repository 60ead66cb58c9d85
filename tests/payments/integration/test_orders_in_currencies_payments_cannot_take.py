"""Orders in a currency nobody can settle them in are refused at placement, named, not charged and stranded."""

import pytest

from tests.payments.integration.test_payment_queries import Start, keys, provider, start  # noqa: F401 - fixtures


@pytest.mark.parametrize("code", ["ABC", "XXX", "XTS"])
async def test_an_order_in_a_code_that_is_no_iso_4217_currency_is_refused(code: str, start: Start) -> None:  # noqa: F811
    """POST /v1/orders took any three upper-case letters as the currency: "ABC" (no currency at all), "XXX"
    (ISO's "no currency") and "XTS" (ISO's code for tests) were placed (201), announced to the ledger (a payment
    would credit an "ABC" wallet) and shown to the user with two decimals the code never had. A code with no ISO 4217
    exponent has no amount: the caller hears 422 at once."""
    payments = await (await start()).with_key()
    body = {"user_id": "u1", "amount": 600, "currency": code, "channel": "card"}
    answer = await payments.client.post("/v1/orders", json=body)
    assert answer.status_code == 422, f"{code}: {answer.status_code} {answer.text[:200]}"
    assert "currency" in answer.text


async def test_a_yen_order_on_the_alipay_channel_is_refused_at_placement_not_left_unpayable(
    start: Start,  # noqa: F811
) -> None:
    """Alipay (and WeChat Pay as a direct merchant) settle in CNY: the Alipay adapter reads every amount as yuan. A
    600 JPY order on the `alipay` channel was placed (201); paid, every callback and query answer said "600 CNY",
    refused as amount_mismatch, and the order sat `submitted` for ever with the user's money taken and nothing
    credited, refunded or expired. Now it is refused at placement, naming the provider and what it takes."""
    payments = await (await start()).with_key()
    body = {"user_id": "u-jpy", "amount": 600, "currency": "JPY", "channel": "alipay"}
    placed = await payments.client.post("/v1/orders", json=body)
    assert placed.status_code == 422, placed.text
    assert placed.json()["error"] == "currency_not_supported" and "alipay" in placed.json()["detail"]
    assert "CNY" in placed.json()["detail"]
    assert await payments.infra.pool.fetchval("SELECT count(*) FROM orders WHERE user_id = 'u-jpy'") == 0
