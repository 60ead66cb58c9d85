import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts import (
    CreditPosted,
    DecodeError,
    OrderHeld,
    OrderPlaced,
    OrderStatus,
    OrderStatusChanged,
    PaymentSucceeded,
    Topic,
    decode,
    encode,
)
from contracts.codec import deterministic_id, envelope_for
from contracts.registry import MODELS, UPCASTERS
from contracts.schemas import SCHEMA_DIR, render

SAMPLES = Path(__file__).parent / "samples"
PAID_AT = datetime(2026, 11, 22, 8, 30, tzinfo=UTC)


def payment() -> PaymentSucceeded:
    return PaymentSucceeded(
        order_id="ord_1",
        user_id="u1",
        amount=600,
        currency="CNY",
        channel="alipay",
        provider="sim",
        provider_txn_id="tx1",
        paid_at=PAID_AT,
    )


def test_committed_json_schemas_match_the_models() -> None:
    rendered = render()
    committed = {p.name: p.read_text() for p in SCHEMA_DIR.glob("*.json")}
    assert committed == rendered, "run: python -m contracts.schemas"


def test_every_model_round_trips_through_a_kafka_record() -> None:
    message = payment()
    envelope = envelope_for(message, producer="payments")
    record = encode(message, envelope)
    assert record.key == b"ord_1"
    decoded, decoded_envelope = decode(record.value, record.headers)
    assert decoded == message
    assert decoded_envelope == envelope


def test_times_are_normalised_to_utc_and_naive_times_are_refused() -> None:
    shanghai = timezone(timedelta(hours=8))
    message = payment().model_copy(update={})
    local = PaymentSucceeded.model_validate({**message.model_dump(), "paid_at": PAID_AT.astimezone(shanghai)})
    assert local.paid_at.utcoffset() == timedelta(0)
    with pytest.raises(ValueError, match="timezone"):
        PaymentSucceeded.model_validate({**message.model_dump(), "paid_at": "2026-11-22T08:30:00"})


def test_money_is_integer_minor_units_never_a_float() -> None:
    with pytest.raises(ValueError):
        PaymentSucceeded.model_validate({**payment().model_dump(), "amount": 6.5})
    with pytest.raises(ValueError):
        PaymentSucceeded.model_validate({**payment().model_dump(), "amount": 0})


def test_unknown_fields_from_newer_producers_are_ignored() -> None:
    record = encode(payment(), envelope_for(payment(), producer="payments"))
    value = json.loads(record.value)
    value["loyalty_points"] = 7
    decoded, _ = decode(json.dumps(value).encode(), record.headers)
    assert decoded == payment()


@pytest.mark.parametrize("extra", [b"\xff\x00binary", None], ids=["binary", "no value"])
def test_a_header_another_producer_added_is_not_ours_to_judge(extra: bytes | None) -> None:
    """A trace context in binary, or a header without a value (Kafka allows one; aiokafka reads it None): the message
    is valid all the same (it was dead-lettered as "header 'x' is not UTF-8")."""
    record = encode(payment(), envelope_for(payment(), producer="payments"))
    decoded, envelope = decode(record.value, [*record.headers, ("trace-bin", extra)])  # type: ignore[list-item]
    assert decoded == payment() and envelope.producer == "payments"


@pytest.mark.parametrize(
    ("value", "headers", "reason"),
    [
        (b"{}", [], "missing headers"),
        (b"not json", None, "not JSON"),
        (b"[1]", None, "not a JSON object"),
        (b'{"order_id": "ord_1"}', None, "failed validation"),
        (None, None, "no value"),
    ],
)
def test_records_that_do_not_decode_name_the_problem(value: bytes | None, headers: object, reason: str) -> None:
    good = encode(payment(), envelope_for(payment(), producer="payments"))
    with pytest.raises(DecodeError, match=reason):
        decode(value, good.headers if headers is None else headers)  # type: ignore[arg-type]


def test_unknown_event_types_and_newer_versions_are_refused() -> None:
    good = encode(payment(), envelope_for(payment(), producer="payments"))
    unknown = [(k, b"Mystery" if k == "event_type" else v) for k, v in good.headers]
    with pytest.raises(DecodeError, match="unknown event_type"):
        decode(good.value, unknown)
    newer = [(k, b"2" if k == "schema_version" else v) for k, v in good.headers]
    with pytest.raises(DecodeError, match="newer"):
        decode(good.value, newer)


def test_an_old_payload_is_lifted_by_its_upcaster(monkeypatch: pytest.MonkeyPatch) -> None:
    # Pretend CreditPosted v2 renamed `transaction_id` from v1's `txn`.
    monkeypatch.setattr(CreditPosted, "schema_version", 2)
    monkeypatch.setitem(UPCASTERS, ("CreditPosted", 1), lambda p: {**p, "transaction_id": p.pop("txn")})
    old = {
        "order_id": "ord_1",
        "user_id": "u1",
        "amount": 5,
        "currency": "CNY",
        "txn": "t1",
        "credited_at": "2026-11-22T08:30:00Z",
    }
    headers = [
        (k, v)
        for k, v in envelope_for(
            CreditPosted.model_validate({**old, "transaction_id": "x"}), producer="ledger"
        ).to_headers()
    ]
    headers = [(k, b"1" if k == "schema_version" else v) for k, v in headers]
    message, _ = decode(json.dumps(old).encode(), headers)
    assert isinstance(message, CreditPosted) and message.transaction_id == "t1"


@pytest.mark.parametrize("sample", sorted(SAMPLES.glob("*.json")), ids=lambda p: p.stem)
def test_every_stored_sample_payload_still_decodes(sample: Path) -> None:
    stored = json.loads(sample.read_text())
    headers = [(k, v.encode()) for k, v in stored["headers"].items()]
    message, envelope = decode(json.dumps(stored["value"]).encode(), headers)
    assert type(message).__name__ == envelope.event_type == stored["headers"]["event_type"]


def test_there_is_a_stored_sample_for_every_event_type() -> None:
    stored = {json.loads(p.read_text())["headers"]["event_type"] for p in SAMPLES.glob("*.json")}
    assert stored == set(MODELS)


@given(st.lists(st.text(), min_size=1, max_size=4))
def test_a_deterministic_id_is_the_uuid5_of_its_parts_in_the_contract_namespace(parts: list[str]) -> None:
    namespace = uuid.UUID("3f1c2a4e-6a1b-4f0e-9a57-2c1d8e0b7a10")
    assert deterministic_id(*parts) == str(uuid.uuid5(namespace, "\x1f".join(parts)))


def test_deterministic_ids_repeat_for_the_same_fact_only() -> None:
    assert deterministic_id("CreditPosted", "ord_1") == deterministic_id("CreditPosted", "ord_1")
    assert deterministic_id("CreditPosted", "ord_1") != deterministic_id("CreditPosted", "ord_2")
    assert deterministic_id("a", "bc") != deterministic_id("ab", "c")


def test_topics_can_be_prefixed_for_isolation() -> None:
    assert Topic.ORDERS_STATUS.qualified("t1.") == "t1.orders.status"
    status = OrderStatusChanged(
        order_id="o",
        user_id="u",
        status=OrderStatus.CREDITED,
        sequence=1,
        amount=1,
        currency="CNY",
        channel="card",
        paid_at=PAID_AT,
        changed_at=PAID_AT,
    )
    assert status.previous_status is None


@pytest.mark.parametrize("event_type", ["OrderPlaced", "PaymentSucceeded"])
def test_orders_stored_before_products_existed_decode_without_a_product(event_type: str) -> None:
    stored = json.loads((SAMPLES / f"{event_type}.v1.json").read_text())
    assert "product" not in stored["value"]
    headers = [(k, v.encode()) for k, v in stored["headers"].items()]
    message, _ = decode(json.dumps(stored["value"]).encode(), headers)
    assert isinstance(message, OrderPlaced | PaymentSucceeded) and message.product is None
    with_product = {**stored["value"], "product": "diamonds_60"}
    message, _ = decode(json.dumps(with_product).encode(), headers)
    assert isinstance(message, OrderPlaced | PaymentSucceeded) and message.product == "diamonds_60"


def test_a_hold_states_its_expected_release_and_refuses_a_naive_time() -> None:
    stored = json.loads((SAMPLES / "OrderHeld.v1.json").read_text())["value"]
    held = OrderHeld.model_validate(stored)
    assert held.expected_release_at > held.held_at >= held.paid_at
    with pytest.raises(ValueError, match="timezone"):
        OrderHeld.model_validate({**stored, "expected_release_at": "2026-11-22T08:45:01"})
