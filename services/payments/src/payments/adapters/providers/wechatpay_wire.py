"""WeChat Pay API v3 on the wire: the messages it signs, the JSON it sends, and how its states read in
provider-neutral words. Amounts are integer fen, as WeChat Pay sends them."""

import re
from datetime import UTC, datetime

from pydantic import AliasChoices, AwareDatetime, BaseModel, ConfigDict, Field, StrictInt, field_validator

from payments.domain import PaymentState, RefundAnswer

SCHEME = "WECHATPAY2-SHA256-RSA2048"

# trade_state of a transaction. REFUND: it was paid, and (part of) it refunded since.
TRADE_STATES = {
    "SUCCESS": PaymentState.PAID,
    "REFUND": PaymentState.PAID,
    "NOTPAY": PaymentState.PENDING,
    "USERPAYING": PaymentState.PENDING,
    "PAYERROR": PaymentState.FAILED,
    "CLOSED": PaymentState.CLOSED,
    "REVOKED": PaymentState.CLOSED,
}
# status of a refund (refund_status in a refund notification).
REFUND_STATES = {"SUCCESS": "succeeded", "PROCESSING": "pending", "CLOSED": "failed", "ABNORMAL": "failed"}

_OUT_TRADE_NO = re.compile(r"[0-9A-Za-z_\-|*]{6,32}", re.ASCII)
_OUR_ID = re.compile(r"ord_([0-9a-f]{32})", re.ASCII)
_HEX32 = re.compile(r"[0-9a-f]{32}", re.ASCII)


def out_trade_no(order_id: str) -> str:
    """WeChat Pay's out_trade_no for our order: at most 32 characters, so the `ord_` of our 36-character
    ids is dropped. Other ids pass unchanged when WeChat Pay takes them and they cannot be mistaken."""
    ours = _OUR_ID.fullmatch(order_id)
    if ours is not None:
        return ours.group(1)
    if _OUT_TRADE_NO.fullmatch(order_id) is None or _HEX32.fullmatch(order_id) is not None:
        raise ValueError(f"order id {order_id!r} cannot be a WeChat Pay out_trade_no")
    return order_id


def order_id(trade_no: str) -> str:
    """Our order id for a WeChat Pay out_trade_no: the inverse of out_trade_no()."""
    return f"ord_{trade_no}" if _HEX32.fullmatch(trade_no) else trade_no


def signed_message(*lines: str | bytes) -> bytes:
    """What WeChat Pay signs: each part followed by a newline. A request is (method, path with query,
    timestamp, nonce, body); a response or callback is (timestamp, nonce, body)."""
    return b"".join((line.encode() if isinstance(line, str) else line) + b"\n" for line in lines)


def authorization(mchid: str, serial: str, nonce: str, timestamp: int, signature: str) -> str:
    """The Authorization header of a request to WeChat Pay."""
    return (
        f'{SCHEME} mchid="{mchid}",nonce_str="{nonce}",signature="{signature}",'
        f'timestamp="{timestamp}",serial_no="{serial}"'
    )


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Resource(_Wire):
    """The encrypted part of a notification: AEAD_AES_256_GCM under the merchant's APIv3 key."""

    algorithm: str
    ciphertext: str
    nonce: str
    associated_data: str = ""
    original_type: str = ""


class Notification(_Wire):
    """The body of a WeChat Pay callback."""

    id: str = Field(min_length=1, max_length=64)
    event_type: str = Field(min_length=1, max_length=64)
    resource_type: str
    resource: Resource


class Amount(_Wire):
    total: StrictInt = Field(ge=0)
    currency: str = "CNY"


class Transaction(_Wire):
    """A payment as WeChat Pay reports it (decrypted notification resource, or a query's answer)."""

    mchid: str
    appid: str = ""
    out_trade_no: str
    transaction_id: str = Field("", max_length=128, pattern=r"^[^\x00-\x1f\x7f]*$")
    trade_state: str
    success_time: AwareDatetime | None = None
    amount: Amount | None = None

    @field_validator("success_time")
    @classmethod
    def _in_range(cls, value: datetime | None) -> datetime | None:
        """A time that UTC cannot hold ("0001-01-01T00:00:00+08:00") is invalid, as a malformed one is."""
        if value is not None:
            try:
                value.astimezone(UTC)
            except OverflowError:
                raise ValueError("success_time is out of range") from None
        return value

    def paid_at(self) -> datetime | None:
        return None if self.success_time is None else self.success_time.astimezone(UTC)


class Refund(_Wire):
    """A refund as WeChat Pay reports it (a refund request's or query's answer, or a refund notification)."""

    out_refund_no: str
    refund_id: str = ""
    out_trade_no: str = ""
    status: str = Field(validation_alias=AliasChoices("status", "refund_status"))

    def answer(self) -> RefundAnswer:
        state = REFUND_STATES.get(self.status)
        if state is None:
            return RefundAnswer("unknown", self.refund_id, f"unexpected refund status {self.status[:40]!r}")
        reason = "" if state == "succeeded" else f"WeChat Pay says the refund is {self.status}"
        return RefundAnswer(state, self.refund_id, reason)


class Error(_Wire):
    """WeChat Pay's answer to a request it refused."""

    code: str = ""
    message: str = ""
