"""The wire format of a payment provider's callback (JSON body, signed in the X-Signature header)."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts.base import Currency, MinorUnits, OrderId, UtcDatetime


class CallbackBody(BaseModel):
    """A provider's notice that a payment for an order succeeded or failed."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    order_id: OrderId
    # Printable text only: it is stored and announced, and PostgreSQL text cannot hold NUL.
    provider_txn_id: str = Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")
    status: Literal["succeeded", "failed"]
    amount: MinorUnits
    currency: Currency
    paid_at: UtcDatetime
