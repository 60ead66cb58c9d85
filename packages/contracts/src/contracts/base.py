"""Shared field types for contract models: money in integer minor units, times in aware UTC."""

from datetime import UTC, datetime
from typing import Annotated, ClassVar

from iso4217 import Currency as Iso4217
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
)


def clip(text: str, limit: int) -> str:
    """`text` cut to `limit` characters with a mark, counted as pydantic counts a field's length: how a service
    fits text it did not choose (a reason someone else gave) into a length-limited field of a contract."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is a valid time that UTC cannot hold: bad input, not a crash
        raise ValueError(f"{value.isoformat()} is out of the range of times in UTC") from None


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
"""A timezone-aware time, normalised to UTC. Naive times are refused."""


def _whole(value: object) -> object:
    """600.0 as 600: the published schemas say `integer`, which in JSON Schema a number with no fraction is, and
    some serialisers write money as doubles. 6.5, strings and booleans are still refused."""
    if type(value) is float and value.is_integer():
        return int(value)
    return value


WholeNumber = Annotated[StrictInt, BeforeValidator(_whole)]
"""A JSON integer, as the published schemas say: 2 and 2.0, never true, "2" or 2.5 (pydantic's lax int takes
those, and a reader of the contract would not)."""

Flag = StrictBool
"""A JSON boolean: true or false, never 1, "true" or "yes"."""

MinorUnits = Annotated[
    StrictInt,
    Field(
        gt=0,
        le=10**12,
        description="Money in the currency's minor units, by its ISO 4217 exponent: 600 is 6.00 CNY, 600 JPY is ¥600.",
    ),
    BeforeValidator(_whole),
]
"""A positive amount of money in the currency's minor units (cents, fen). Never a fraction (600.0 reads as 600)."""


_ISO_4217_EXPONENTS: dict[str, int | None] = {c.code: c.exponent for c in Iso4217}
"""Looked up by code once here: every money field of every decoded message asks, and the enum's own lookup by value
cost the ledger 6% of its CPU per credit."""


def exponent(currency: str) -> int:
    """How many minor-unit digits `currency` has by ISO 4217, which MinorUnits counts in: JPY 0, CNY 2, KWD and
    IQD 3. (CLDR's display digits, which Babel reports, differ for IQD, RSD and a dozen others.) ValueError for a
    code that is no currency, or no money (XXX, XTS, the metals)."""
    try:
        digits = _ISO_4217_EXPONENTS[currency]
    except (KeyError, TypeError):
        raise ValueError(f"{currency!r} is not an ISO 4217 currency") from None
    if digits is None:
        raise ValueError(f"{currency} has no minor unit in ISO 4217: no currency to pay in")
    return digits


def _iso_4217(currency: str) -> str:
    exponent(currency)
    return currency


Currency = Annotated[
    str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 currency code."), AfterValidator(_iso_4217)
]
"""An ISO 4217 currency code, upper case, of a currency with a minor unit (not XXX, XTS or a metal)."""

OrderId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="The order: also the Kafka key of every message about it.",
    ),
]
UserId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:@-]+$")]
Channel = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[a-z0-9_.-]+$")]
Product = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_.-]+$")]
"""What the top-up buys (a SKU such as `diamonds_60`); optional on orders, so old payloads still decode."""


class Message(BaseModel):
    """A frozen contract model that ignores fields it does not know (newer producers may add some)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_type: ClassVar[str]
    schema_version: ClassVar[int] = 1
    order_id: OrderId
