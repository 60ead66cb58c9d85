"""Alipay's open API on the wire: what it signs, its times, and how its states read in provider-neutral
words. Amounts are yuan strings (see yuan.py)."""

import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta, timezone

from payments.domain import PaymentState

# Alipay writes its times in China Standard Time, which has no daylight saving.
CHINA = timezone(timedelta(hours=8), "CST")
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
SUCCESS = "10000"

TRADE_STATES = {
    "TRADE_SUCCESS": PaymentState.PAID,
    "TRADE_FINISHED": PaymentState.PAID,  # paid, and past the time a refund could be asked
    "WAIT_BUYER_PAY": PaymentState.PENDING,
    "TRADE_CLOSED": PaymentState.CLOSED,  # closed unpaid, or paid and refunded in full
}
# A business failure that may pass if the same request is sent again later.
RETRYABLE = {"ACQ.SYSTEM_ERROR", "ACQ.SELLER_BALANCE_NOT_ENOUGH", "ACQ.REASON_TRADE_REFUND_FEE_ERR"}


def currency(fields: Mapping[str, object]) -> str:
    """The currency of a trade's total_amount: its trans_currency (the currency it was priced in), CNY when
    Alipay names none."""
    return str(fields.get("trans_currency") or "CNY")


def signing_content(params: Iterable[tuple[str, str]], *, leave_out: frozenset[str]) -> bytes:
    """The `k=v&k=v` string Alipay signs: parameters sorted by name, empty values and `leave_out` omitted.
    A notification leaves out sign and sign_type; a request only sign."""
    kept = sorted((k, v) for k, v in params if k not in leave_out and v != "")
    return "&".join(f"{k}={v}" for k, v in kept).encode()


def parse_time(text: str) -> datetime:
    """An Alipay time ("2024-01-31 12:00:00", China time) in UTC; ValueError if malformed or out of range (in
    UTC, "0001-01-01 07:59:59" is before the first day a datetime holds)."""
    try:
        return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=CHINA).astimezone(UTC)
    except OverflowError:
        raise ValueError(f"time {text[:40]!r} is out of range") from None


def format_time(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, CHINA).strftime(TIME_FORMAT)


_KEY = r'"{name}"\s*:\s*'


def response_part(text: str, method: str) -> tuple[dict[str, object], str, str | None]:
    """(answer, the exact text Alipay signed, sign) of a gateway response: the answer sits under
    `<method with _>_response` (or `error_response`), and the signature covers its raw text."""
    document = json.loads(text)
    if not isinstance(document, dict):
        raise ValueError("the gateway's answer is not a JSON object")
    for name in (method.replace(".", "_") + "_response", "error_response"):
        if name not in document:
            continue
        match = re.search(_KEY.format(name=re.escape(name)), text)
        if match is None:
            break
        part, end = json.JSONDecoder().raw_decode(text, match.end())
        if part != document[name] or not isinstance(part, dict):
            raise ValueError(f"the gateway's {name} could not be located in its text")
        sign = document.get("sign")
        return part, text[match.end() : end], sign if isinstance(sign, str) else None
    raise ValueError(f"the gateway's answer has no {method} response")
