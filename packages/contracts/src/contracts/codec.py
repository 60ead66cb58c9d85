"""Encoding to and decoding from Kafka records: the order id as key, JSON as value, the envelope as headers.

Decoding happens once, at the edge of a consumer. Anything that does not decode raises DecodeError
with a reason fit for the dead-letter topic.
"""

import hashlib
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from pydantic_core import from_json

from contracts.base import Message
from contracts.registry import MODELS, upcast

Headers = Sequence[tuple[str, bytes]]

_NAMESPACE = uuid.UUID("3f1c2a4e-6a1b-4f0e-9a57-2c1d8e0b7a10")


class DecodeError(ValueError):
    """A record that is not a valid credited message; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_NAMESPACE_BYTES = _NAMESPACE.bytes
_VARIANT = "89ab89ab89ab89ab"
"""A hex digit with the RFC 4122 variant bits set: (digit & 0b0011) | 0b1000."""


def deterministic_id(*parts: str) -> str:
    """The same id for the same parts, in every process: repeats of one fact share an event id.

    It is `str(uuid.uuid5(_NAMESPACE, "\x1f".join(parts)))`, formatted from the SHA-1 digest directly: the ledger
    makes two per credit, and building a uuid.UUID costs several times the hash."""
    h = hashlib.sha1(_NAMESPACE_BYTES + "\x1f".join(parts).encode(), usedforsecurity=False).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[int(h[16], 16)]}{h[17:20]}-{h[20:32]}"


@dataclass(frozen=True, slots=True)
class Envelope:
    """The headers every credited record carries."""

    event_type: str
    schema_version: int
    event_id: str
    correlation_id: str
    occurred_at: datetime
    producer: str

    def to_headers(self) -> list[tuple[str, bytes]]:
        return [
            ("event_type", self.event_type.encode()),
            ("schema_version", str(self.schema_version).encode()),
            ("event_id", self.event_id.encode()),
            ("correlation_id", self.correlation_id.encode()),
            ("occurred_at", self.occurred_at.isoformat().encode()),
            ("producer", self.producer.encode()),
        ]

    @classmethod
    def from_headers(cls, headers: Headers) -> "Envelope":
        raw: dict[str, str] = {}
        for key, value in headers:
            if key not in _HEADER_KEYS:
                continue  # another producer's (a trace context, binary or empty): not ours to judge
            if value is None:  # Kafka allows a header without a value; aiokafka reads it None
                raise DecodeError(f"header {key!r} has no value")
            try:
                raw[key] = value.decode()
            except UnicodeDecodeError:
                raise DecodeError(f"header {key!r} is not UTF-8") from None
        missing = [k for k in _HEADER_ORDER if k not in raw]
        if missing:
            raise DecodeError(f"missing headers: {', '.join(missing)}")
        # Non-empty, as the contract says: every record with an empty event_id would share one key in the consumers'
        # processed events, and all but the first would be skipped as already applied.
        empty = [k for k in _NON_EMPTY if not raw[k]]
        if empty:
            raise DecodeError(f"empty headers: {', '.join(empty)}")
        # Decimal digits without a leading zero, as published: int() would also take "01", " 1", "+1", "1_0" and
        # other scripts' digits, which no producer that follows the contract writes.
        if not _VERSION.fullmatch(raw["schema_version"]):
            raise DecodeError(
                f"bad header value: schema_version {raw['schema_version'][:20]!r} is not a version number"
            )
        try:
            version = int(raw["schema_version"])
            # RFC 3339, as published (date-time), allows "t" and "z" in lower case; fromisoformat only upper.
            occurred_at = datetime.fromisoformat(raw["occurred_at"].upper())
        except ValueError as exc:  # its message repeats the value: a reason is never longer than it needs to be
            raise DecodeError(f"bad header value: {str(exc)[:200]}") from None
        if occurred_at.tzinfo is None:
            raise DecodeError("header occurred_at has no timezone")
        return cls(
            event_type=raw["event_type"],
            schema_version=version,
            event_id=raw["event_id"],
            correlation_id=raw["correlation_id"],
            occurred_at=occurred_at.astimezone(UTC),
            producer=raw["producer"],
        )


_HEADER_ORDER = ("event_type", "schema_version", "event_id", "correlation_id", "occurred_at", "producer")
_HEADER_KEYS = frozenset(_HEADER_ORDER)
_NON_EMPTY = ("event_type", "event_id", "correlation_id", "producer")
_VERSION = re.compile(r"[1-9][0-9]*")


@dataclass(frozen=True, slots=True)
class Record:
    """A message ready for the broker."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def envelope_for(
    message: Message,
    *,
    producer: str,
    event_id: str | None = None,
    correlation_id: str | None = None,
    occurred_at: datetime | None = None,
) -> Envelope:
    """Headers for a new message. Pass a deterministic `event_id` when a repeat must be recognised."""
    return Envelope(
        event_type=message.event_type,
        schema_version=message.schema_version,
        event_id=event_id or str(uuid.uuid4()),
        correlation_id=correlation_id or message.order_id,
        occurred_at=occurred_at or datetime.now(UTC),
        producer=producer,
    )


def encode(message: Message, envelope: Envelope) -> Record:
    """The record for `message`: key = order id, value = JSON, headers = envelope."""
    if envelope.event_type != message.event_type:
        raise ValueError(f"envelope says {envelope.event_type}, message is {message.event_type}")
    return Record(
        key=message.order_id.encode(),
        value=message.__pydantic_serializer__.to_json(message),
        headers=envelope.to_headers(),
    )


def decode(value: bytes | None, headers: Headers) -> tuple[Message, Envelope]:
    """The contract model and envelope of a record, or DecodeError naming what is wrong."""
    envelope = Envelope.from_headers(headers)
    model = MODELS.get(envelope.event_type)
    if model is None:
        raise DecodeError(f"unknown event_type {envelope.event_type[:100]!r}")
    if envelope.schema_version > model.schema_version:
        raise DecodeError(
            f"{envelope.event_type} v{envelope.schema_version} is newer than this consumer's v{model.schema_version}"
        )
    if value is None:
        raise DecodeError("record has no value")
    try:
        # pydantic's own JSON parser keeps the package's one dependency; NaN and Infinity are not JSON.
        payload: Any = from_json(value, allow_inf_nan=False)
    except ValueError as exc:
        raise DecodeError(f"value is not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise DecodeError("value is not a JSON object")
    try:
        payload = upcast(envelope.event_type, envelope.schema_version, payload)
    except LookupError as exc:
        raise DecodeError(str(exc)) from None
    try:
        message = model.model_validate(payload)
    except ValidationError as exc:
        raise DecodeError(f"{envelope.event_type} failed validation: {_summary(exc)}") from None
    return message, envelope


def _summary(exc: ValidationError) -> str:
    parts = [f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()]
    return "; ".join(parts)[:500]
