"""Refunds: once per order; a request that timed out is queried before it is ever requested again."""

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from contracts.codec import envelope_for
from contracts.commands import IssueRefund
from contracts.events import RefundFailed, RefundSucceeded
from payments.adapters.provider import SimulatedProvider
from payments.domain import Order, PaymentStatus
from payments.ports import RefundAnswer
from payments.refunds import MAX_ATTEMPTS, handle_issue_refund
from servicekit.rejections import PermanentFailure
from tests.payments.unit.fakes import InMemoryPayments, Store

T0 = datetime(2026, 11, 22, tzinfo=UTC)


class ScriptedProvider:
    """Answers refund requests and queries from scripts; a TimeoutError in a script is raised; records calls."""

    def __init__(self, refunds: list[RefundAnswer | Exception], queries: list[RefundAnswer | Exception]) -> None:
        self.refunds = refunds
        self.queries = queries
        self.calls: list[str] = []

    async def refund(self, provider: str, provider_txn_id: str, amount: int, currency: str, key: str) -> RefundAnswer:
        self.calls.append("refund")
        return self._next(self.refunds)

    async def query(self, provider: str, key: str) -> RefundAnswer:
        self.calls.append("query")
        return self._next(self.queries)

    @staticmethod
    def _next(script: list[RefundAnswer | Exception]) -> RefundAnswer:
        answer = script.pop(0) if script else RefundAnswer("unknown", reason="timed out")
        if isinstance(answer, Exception):
            raise answer
        return answer


def paid_store() -> Store:
    store = Store()
    store.orders["ord_1"] = Order(
        order_id="ord_1",
        user_id="u1",
        amount=600,
        currency="CNY",
        channel="card",
        payment_status=PaymentStatus.SUCCEEDED,
        status="paid",
        created_at=T0,
        provider="sim",
        provider_txn_id="tx1",
        paid_at=T0,
    )
    return store


def command() -> IssueRefund:
    return IssueRefund(
        order_id="ord_1", user_id="u1", amount=600, currency="CNY", reason="credit failed", requested_at=T0
    )


async def refund(store: Store, provider: object, event_id: str = "cmd-1") -> None:
    cmd = command()
    envelope = envelope_for(cmd, producer="reconciler", event_id=event_id)
    await handle_issue_refund(cmd, envelope, uow=lambda: InMemoryPayments(store), provider=provider)  # type: ignore[arg-type]


def outcomes(store: Store) -> list[type]:
    return [type(message) for _, message, _ in store.published]


async def test_a_refund_that_timed_out_but_happened_is_found_by_a_query_and_not_requested_again() -> None:
    store = paid_store()
    provider = ScriptedProvider([TimeoutError("read timeout")], [RefundAnswer("succeeded", refund_id="rf_1")])
    await refund(store, provider)
    assert provider.calls == ["refund", "query"]
    assert outcomes(store) == [RefundSucceeded]
    assert store.refunds["ord_1"][0].refund_id == "rf_1"


async def test_a_refund_the_provider_has_no_record_of_is_requested_again_only_after_the_query() -> None:
    store = paid_store()
    provider = ScriptedProvider(
        [RefundAnswer("unknown", reason="timed out"), RefundAnswer("succeeded", refund_id="rf_2")],
        [RefundAnswer("unknown", reason="no such refund")],
    )
    await refund(store, provider)
    assert provider.calls == ["refund", "query", "refund"]
    assert outcomes(store) == [RefundSucceeded]


async def test_a_provider_that_never_answers_is_queried_after_every_request_then_the_refund_is_reported_failed() -> (
    None
):
    store = paid_store()
    provider = ScriptedProvider([], [ConnectionResetError("reset")])
    await refund(store, provider)
    assert provider.calls == ["refund", "query"] * MAX_ATTEMPTS
    assert outcomes(store) == [RefundFailed]
    failed = store.published[0][1]
    assert isinstance(failed, RefundFailed) and "did not answer" in failed.reason


async def test_the_simulated_providers_timeouts_still_refund_once() -> None:
    store = paid_store()
    provider = SimulatedProvider(timeout_share=1.0, latency_s=0)
    await refund(store, provider)
    await refund(store, provider, event_id="cmd-1")  # redelivered: no effect
    await refund(store, provider, event_id="cmd-2")  # asked again: the stored outcome is announced again
    assert outcomes(store) == [RefundSucceeded, RefundSucceeded]
    assert len(provider._done) == 1 and store.refunds["ord_1"][1] == 1


@pytest.mark.parametrize(
    ("order_id", "change", "label"),
    [
        ("ord_unknown", {}, "unknown_order"),
        ("ord_pending", {}, "order_not_paid"),
        ("ord_1", {"amount": 601}, "above_amount_paid"),
        ("ord_1", {"amount": 599}, "refund_mismatch"),
        ("ord_1", {"currency": "USD"}, "refund_mismatch"),
        ("ord_1", {"user_id": "u2"}, "refund_mismatch"),
    ],
)
async def test_a_refund_no_payment_stands_behind_is_refused_for_good_before_the_provider_is_asked(
    order_id: str, change: dict[str, object], label: str
) -> None:
    store = paid_store()
    store.orders["ord_pending"] = replace(
        store.orders["ord_1"], order_id="ord_pending", payment_status=PaymentStatus.PENDING, provider=None
    )
    provider = ScriptedProvider(refunds=[RefundAnswer("succeeded", refund_id="rf")], queries=[])
    cmd = command().model_copy(update={"order_id": order_id, **change})
    envelope = envelope_for(cmd, producer="reconciler", event_id="cmd-1")
    with pytest.raises(PermanentFailure) as refused:
        await handle_issue_refund(cmd, envelope, uow=lambda: InMemoryPayments(store), provider=provider)  # type: ignore[arg-type]
    assert refused.value.label == label
    assert provider.calls == [] and store.published == []
