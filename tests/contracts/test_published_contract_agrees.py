"""Messages the published contract (docs/contracts.md, the AsyncAPI envelope, the JSON Schemas) allows are
decoded, and ones it forbids are refused: the code and what platform teams validate with never disagree."""

import json
from datetime import UTC, datetime

import jsonschema_rs
import pytest

from contracts import DecodeError, PaymentSucceeded, decode, encode
from contracts.asyncapi import ENVELOPE_HEADERS
from contracts.codec import envelope_for
from contracts.schemas import SCHEMA_DIR
from tests.contracts.test_contracts import SAMPLES, payment


def _record_with(**headers: str) -> tuple[bytes, list[tuple[str, bytes]], dict[str, str]]:
    record = encode(payment(), envelope_for(payment(), producer="payments"))
    raw = {k: v.decode() for k, v in record.headers}
    raw.update(headers)
    return record.value, [(k, v.encode()) for k, v in raw.items()], raw


@pytest.mark.parametrize("header", ["event_id", "correlation_id", "producer"])
def test_an_empty_event_id_correlation_id_or_producer_header_is_refused_as_the_contract_says(header: str) -> None:
    """docs/contracts.md: event_id is 'any non-empty string'; the AsyncAPI envelope says minLength 1. An empty
    event_id decoded would be one dedup key (processed_events PK (consumer, event_id)) shared by every record
    that has it: after the first, the ledger would skip them all as 'already applied'."""
    value, headers, raw = _record_with(**{header: ""})
    assert not jsonschema_rs.validator_for(ENVELOPE_HEADERS).is_valid(raw)  # the published contract refuses it
    with pytest.raises(DecodeError, match=f"empty headers: {header}"):
        decode(value, headers)


@pytest.mark.parametrize("occurred_at", ["2026-11-22T08:30:00z", "2026-11-22t08:30:00z"])
def test_an_occurred_at_with_rfc_3339s_lower_case_t_and_z_decodes_as_published(occurred_at: str) -> None:
    """RFC 3339 (JSON Schema's `date-time`, which the AsyncAPI envelope publishes for occurred_at) allows lower
    case 't' and 'z', and the payload's own times accept them: so does the header."""
    value, headers, raw = _record_with(occurred_at=occurred_at)
    assert jsonschema_rs.validator_for(ENVELOPE_HEADERS, validate_formats=True).is_valid(raw)
    PaymentSucceeded.model_validate_json(json.dumps({**json.loads(value), "paid_at": occurred_at}))  # accepted here
    _, envelope = decode(value, headers)
    assert envelope.occurred_at == datetime(2026, 11, 22, 8, 30, tzinfo=UTC)


def test_an_amount_of_600_point_0_which_the_published_schema_calls_an_integer_decodes_as_600() -> None:
    """The published PaymentSucceeded.v1.json says amount is {"type": "integer"}; in JSON Schema 600.0 is an
    integer (a number with a zero fractional part), and a platform's serialiser may write money as a double. 6.5
    and "600" are still refused."""
    schema = json.loads((SCHEMA_DIR / "PaymentSucceeded.v1.json").read_text())
    value, headers, _ = _record_with()
    payload = {**json.loads(value), "amount": 600.0}
    assert jsonschema_rs.validator_for(schema).is_valid(payload)
    message, _ = decode(json.dumps(payload).encode(), headers)
    assert message.amount == 600 and type(message.amount) is int  # type: ignore[attr-defined]
    for refused in (6.5, "600", True):
        with pytest.raises(DecodeError, match="amount"):
            decode(json.dumps({**payload, "amount": refused}).encode(), headers)


@pytest.mark.parametrize("version", ["01", "+1", " 1", "1_0", "\u0661"])
def test_a_schema_version_header_the_envelope_pattern_refuses_is_refused(version: str) -> None:
    """The AsyncAPI envelope publishes schema_version as decimal digits without a leading zero; Python's int()
    also reads "01", "+1", " 1", "1_0" (as 10) and other scripts' digits, which no producer that follows the
    contract writes: the record is dead-lettered with the reason, not read as some version."""
    value, headers, raw = _record_with(schema_version=version)
    assert not jsonschema_rs.validator_for(ENVELOPE_HEADERS).is_valid(raw)
    with pytest.raises(DecodeError, match="schema_version"):
        decode(value, headers)


def _sample(event_type: str) -> tuple[dict[str, object], list[tuple[str, bytes]], dict[str, object]]:
    stored = json.loads((SAMPLES / f"{event_type}.v1.json").read_text())
    schema = json.loads((SCHEMA_DIR / f"{event_type}.v1.json").read_text())
    return stored["value"], [(k, v.encode()) for k, v in stored["headers"].items()], schema


@pytest.mark.parametrize(
    ("event_type", "field", "refused", "accepted"),
    [
        ("OrderStatusChanged", "sequence", [True, "2", 2.5], [(2.0, 2)]),
        ("RetryCredit", "attempt", [True, "2"], [(2.0, 2)]),
        ("RedriveCredit", "attempt", [True, "2"], [(2.0, 2)]),
        ("CreditRejected", "final", [1, 0, "true", "no"], [(True, True), (False, False)]),
    ],
)
def test_integer_and_boolean_fields_take_what_their_published_schema_takes_and_nothing_else(
    event_type: str, field: str, refused: list[object], accepted: list[tuple[object, object]]
) -> None:
    """A sequence of true or "2", or a `final` of "no" (which pydantic's lax mode reads as False: a final refusal
    taken for a retryable one), is not what the published schema allows; they are dead-lettered with the field
    named. What the schema allows (2.0 is an integer in JSON Schema) decodes."""
    payload, headers, schema = _sample(event_type)
    validator = jsonschema_rs.validator_for(schema)
    for value in refused:
        assert not validator.is_valid({**payload, field: value})
        with pytest.raises(DecodeError, match=field):
            decode(json.dumps({**payload, field: value}).encode(), headers)
    for value, decoded in accepted:
        assert validator.is_valid({**payload, field: value})
        message, _ = decode(json.dumps({**payload, field: value}).encode(), headers)
        assert getattr(message, field) == decoded and type(getattr(message, field)) is type(decoded)
