"""The local provider's book: the trades merchants opened and users paid, and their refunds, the way a
provider keeps them (by the merchant's trade number and refund number)."""

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum


class TradeState(StrEnum):
    WAITING = "waiting"  # opened, the user has not paid
    PAID = "paid"
    CLOSED = "closed"  # closed unpaid, or refunded in full


@dataclass
class Refund:
    refund_no: str  # the merchant's refund number: the idempotency key
    refund_id: str  # the provider's
    amount: int
    created_at: datetime


@dataclass
class Trade:
    """One merchant trade: amounts in minor units (fen); the protocols convert."""

    provider: str
    trade_no: str  # the merchant's out_trade_no
    amount: int
    currency: str
    created_at: datetime
    state: TradeState = TradeState.WAITING
    txn_id: str = ""
    paid_at: datetime | None = None
    closed_at: datetime | None = None
    refunds: dict[str, Refund] = field(default_factory=dict)

    @property
    def refunded(self) -> int:
        return sum(r.amount for r in self.refunds.values())


class BookError(Exception):
    """A request the provider refuses: `code` names why in provider-neutral words."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass
class Book:
    """Trades by (provider, merchant trade number); every change is idempotent as a provider's is."""

    trades: dict[tuple[str, str], Trade] = field(default_factory=dict)
    closes: int = 0

    def get(self, provider: str, trade_no: str) -> Trade | None:
        return self.trades.get((provider, trade_no))

    def open(self, provider: str, trade_no: str, amount: int, currency: str = "CNY") -> Trade:
        """The user starts paying: the trade exists, waiting. Opening it again changes nothing."""
        trade = self.trades.get((provider, trade_no))
        if trade is None:
            trade = Trade(provider, trade_no, amount, currency, datetime.now(UTC))
            self.trades[(provider, trade_no)] = trade
        return trade

    def pay(self, provider: str, trade_no: str) -> Trade:
        trade = self._trade(provider, trade_no)
        if trade.state is TradeState.CLOSED:
            raise BookError("closed", f"trade {trade_no} is closed")
        if trade.state is TradeState.WAITING:
            trade.state, trade.paid_at = TradeState.PAID, datetime.now(UTC)
            trade.txn_id = f"{datetime.now(UTC):%Y%m%d}{uuid.uuid4().int % 10**18:018d}"
        return trade

    def close(self, provider: str, trade_no: str) -> Trade:
        trade = self._trade(provider, trade_no)
        if trade.state is TradeState.PAID:
            raise BookError("paid", f"trade {trade_no} is paid")
        if trade.state is TradeState.WAITING:
            trade.state, trade.closed_at = TradeState.CLOSED, datetime.now(UTC)
            self.closes += 1
        return trade

    def refund(self, provider: str, trade_no: str, refund_no: str, amount: int) -> tuple[Trade, Refund, bool]:
        """(trade, refund, True when new): the same refund number again is the same refund."""
        trade = self._trade(provider, trade_no)
        done = trade.refunds.get(refund_no)
        if done is not None:
            if done.amount != amount:
                raise BookError("refund_changed", f"refund {refund_no} was for {done.amount}, not {amount}")
            return trade, done, False
        if trade.paid_at is None:
            raise BookError("not_paid", f"trade {trade_no} was never paid")
        if amount <= 0 or trade.refunded + amount > trade.amount:
            raise BookError("too_much", f"{amount} more than the {trade.amount - trade.refunded} left to refund")
        refund = Refund(refund_no, f"50{uuid.uuid4().int % 10**26:026d}", amount, datetime.now(UTC))
        trade.refunds[refund_no] = refund
        if trade.refunded == trade.amount:
            trade.state, trade.closed_at = TradeState.CLOSED, datetime.now(UTC)
        return trade, refund, True

    def _trade(self, provider: str, trade_no: str) -> Trade:
        trade = self.trades.get((provider, trade_no))
        if trade is None:
            raise BookError("not_found", f"no trade {trade_no}")
        return trade
