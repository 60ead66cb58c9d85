"""Refunds with a fake provider: once per order, at the provider that took the payment, under our refund id; a
request that timed out is queried before it is ever requested again."""

import functools
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from contracts.codec import deterministic_id, envelope_for
from contracts.commands import IssueRefund
from contracts.events import CaseKind, CaseSeverity, RefundFailed, RefundSucceeded
from payments.adapters.providers.simulated import SimulatedProvider, SimulatedRefunds
from payments.domain import (
    CallbackAck,
    CloseAnswer,
    Order,
    PaymentQuery,
    PaymentStatus,
    ProviderReply,
    RefundRequest,
    VerifiedCallback,
)
from payments.ports import PaymentProvider, RefundAnswer
from payments.refunds import MAX_ATTEMPTS, PENDING_WAIT_S, RefundFollowUp, follow_up_at, handle_issue_refund
from servicekit.rejections import PermanentFailure
from tests.payments.unit.fakes import InMemoryPayments, Store

T0 = datetime(2026, 11, 22, tzinfo=UTC)
Script = list[RefundAnswer | Exception]


class ScriptedProvider:
    """A PaymentProvider whose refunds and refund queries answer from scripts (an exception in a script is
    raised); it records each call with what it was asked."""

    def __init__(self, refunds: Script, queries: Script, name: str = "alipay") -> None:
        self._name = name
        self.refunds = refunds
        self.queries = queries
        self.calls: list[str] = []
        self.requests: list[RefundRequest] = []
        self.asked: list[tuple[str, str]] = []

    @property
    def name(self) -> str:
        return self._name

    async def refund(self, request: RefundRequest) -> RefundAnswer:
        self.calls.append("refund")
        self.requests.append(request)
        return self._next(self.refunds)

    async def query_refund(self, order_id: str, refund_id: str) -> RefundAnswer:
        self.calls.append("query")
        self.asked.append((order_id, refund_id))
        return self._next(self.queries)

    @staticmethod
    def _next(script: Script) -> RefundAnswer:
        answer = script.pop(0) if script else RefundAnswer("unknown", reason="timed out")
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def verify_callback(self, body: bytes, headers: Mapping[str, str]) -> VerifiedCallback:
        raise NotImplementedError

    def reply(self, ack: CallbackAck) -> ProviderReply:
        raise NotImplementedError

    async def query_payment(self, order_id: str) -> PaymentQuery:
        raise NotImplementedError

    async def close(self, order_id: str) -> CloseAnswer:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


class Providers:
    def __init__(self, *providers: PaymentProvider) -> None:
        self._by_name = {p.name: p for p in providers}

    def get(self, name: str) -> PaymentProvider | None:
        return self._by_name.get(name)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._by_name)


class Pauses:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def paid_store(provider: str = "alipay") -> Store:
    store = Store()
    store.orders["ord_1"] = Order(
        order_id="ord_1",
        user_id="u1",
        amount=600,
        currency="CNY",
        channel="alipay",
        payment_status=PaymentStatus.SUCCEEDED,
        status="paid",
        created_at=T0,
        provider=provider,
        provider_txn_id="tx1",
        paid_at=T0,
    )
    return store


def command() -> IssueRefund:
    return IssueRefund(
        order_id="ord_1", user_id="u1", amount=600, currency="CNY", reason="credit failed", requested_at=T0
    )


async def refund(
    store: Store, *providers: PaymentProvider, event_id: str = "cmd-1", pauses: Pauses | None = None
) -> None:
    cmd = command()
    envelope = envelope_for(cmd, producer="reconciler", event_id=event_id)
    await handle_issue_refund(
        cmd,
        envelope,
        uow=lambda: InMemoryPayments(store),
        providers=Providers(*providers),
        provider_timeout_s=1.0,
        sleep=pauses or Pauses(),
    )


def outcomes(store: Store) -> list[type]:
    return [type(message) for _, message, _ in store.published]


async def test_the_refund_goes_to_the_provider_that_took_the_payment_with_our_refund_id_and_the_amount_paid() -> None:
    store = paid_store("wechatpay")
    took = ScriptedProvider([RefundAnswer("succeeded", refund_id="50300")], [], name="wechatpay")
    other = ScriptedProvider([RefundAnswer("succeeded", refund_id="rf")], [], name="alipay")
    await refund(store, took, other)
    assert other.calls == [] and took.calls == ["refund"]
    order = store.orders["ord_1"]
    assert took.requests == [
        RefundRequest(
            "ord_1", deterministic_id("refund", "ord_1"), "tx1", order.amount, order.amount, "CNY", "credit failed"
        )
    ]
    assert outcomes(store) == [RefundSucceeded]
    assert store.refunds["ord_1"] == (RefundAnswer("succeeded", refund_id="50300"), 1)


async def test_a_refund_that_timed_out_but_happened_is_found_by_a_query_and_not_requested_again() -> None:
    store = paid_store()
    provider = ScriptedProvider([TimeoutError("read timeout")], [RefundAnswer("succeeded", refund_id="rf_1")])
    await refund(store, provider)
    assert provider.calls == ["refund", "query"]
    assert provider.asked == [("ord_1", provider.requests[0].refund_id)]
    assert outcomes(store) == [RefundSucceeded]
    assert store.refunds["ord_1"][0].refund_id == "rf_1"


async def test_a_refund_the_provider_has_no_record_of_is_requested_again_under_the_same_id_only_after_the_query() -> (
    None
):
    store = paid_store()
    provider = ScriptedProvider(
        [RefundAnswer("unknown", reason="timed out"), RefundAnswer("succeeded", refund_id="rf_2")],
        [RefundAnswer("unknown", reason="no such refund")],
    )
    await refund(store, provider)
    assert provider.calls == ["refund", "query", "refund"]
    assert provider.requests[0] == provider.requests[1]
    assert outcomes(store) == [RefundSucceeded]


async def test_a_provider_that_never_answers_is_asked_after_each_request_and_its_refund_stays_on_record_requested() -> (
    None
):
    # The refund may have happened: reported failed, support could re-drive the credit and pay the user twice.
    store = paid_store()
    provider = ScriptedProvider([], [ConnectionResetError("reset")])
    await refund(store, provider)
    assert provider.calls == ["refund", "query"] * MAX_ATTEMPTS
    assert store.published == []
    assert store.refunds["ord_1"][0].status == "requested"
    due_at, reason = store.refund_asks["ord_1"]
    assert due_at is not None and reason == "credit failed"


async def test_a_refund_the_provider_declines_is_reported_failed_with_its_reason_and_not_queried() -> None:
    store = paid_store()
    provider = ScriptedProvider([RefundAnswer("failed", reason="Alipay answered 40004 ACQ.TRADE_HAS_CLOSE")], [])
    await refund(store, provider)
    assert provider.calls == ["refund"]
    failed = store.published[0][1]
    assert isinstance(failed, RefundFailed) and "ACQ.TRADE_HAS_CLOSE" in failed.reason


async def test_a_pending_refund_is_only_queried_after_a_pause_until_the_provider_says_how_it_ended() -> None:
    store, pauses = paid_store(), Pauses()
    provider = ScriptedProvider(
        [RefundAnswer("pending", refund_id="50300", reason="PROCESSING")],
        [RefundAnswer("pending", refund_id="50300"), RefundAnswer("succeeded", refund_id="50300")],
    )
    await refund(store, provider, pauses=pauses)
    assert provider.calls == ["refund", "query", "query"]
    assert pauses.waits == [PENDING_WAIT_S, 2 * PENDING_WAIT_S]
    assert outcomes(store) == [RefundSucceeded]


async def test_a_refund_still_pending_after_the_last_query_stays_on_record_pending_and_is_never_reported_failed() -> (
    None
):
    store = paid_store()
    pending = RefundAnswer("pending", refund_id="50300", reason="PROCESSING")
    provider = ScriptedProvider([pending], [pending] * MAX_ATTEMPTS)
    await refund(store, provider)
    assert provider.calls == ["refund"] + ["query"] * MAX_ATTEMPTS
    assert store.published == []
    assert store.refunds["ord_1"] == (pending, MAX_ATTEMPTS)


async def test_a_refund_of_an_order_whose_provider_is_not_configured_is_dead_lettered_before_anything_is_asked() -> (
    None
):
    store = paid_store("paypal")
    provider = ScriptedProvider([RefundAnswer("succeeded", refund_id="rf")], [])
    with pytest.raises(PermanentFailure) as refused:
        await refund(store, provider)
    assert refused.value.label == "provider_not_configured"
    assert provider.calls == [] and store.published == [] and store.refunds == {}


async def test_the_simulated_providers_timeouts_still_refund_once() -> None:
    store = paid_store("sim")
    refunds = SimulatedRefunds(timeout_share=1.0, latency_s=0)
    sim = SimulatedProvider("sim", ["secret"], refunds)
    await refund(store, sim)
    await refund(store, sim, event_id="cmd-1")  # redelivered: no effect
    await refund(store, sim, event_id="cmd-2")  # asked again: the stored outcome is announced again
    assert outcomes(store) == [RefundSucceeded, RefundSucceeded]
    assert len(refunds.done) == 1 and store.refunds["ord_1"][1] == 1


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
        await handle_issue_refund(
            cmd, envelope, uow=lambda: InMemoryPayments(store), providers=Providers(provider), provider_timeout_s=1.0
        )
    assert refused.value.label == label
    assert provider.calls == [] and store.published == []


@pytest.mark.parametrize("status", ["credited", "compensated"])
async def test_a_refund_of_an_order_the_ledger_credited_is_refused_for_good_and_never_reaches_the_provider(
    status: str,
) -> None:
    store = paid_store()
    store.orders["ord_1"] = replace(store.orders["ord_1"], status=status)
    provider = ScriptedProvider(refunds=[RefundAnswer("succeeded", refund_id="rf")], queries=[])
    with pytest.raises(PermanentFailure) as refused:
        await refund(store, provider)
    assert refused.value.label == "order_credited"
    assert f"order is {status}" in str(refused.value)
    assert provider.calls == [] and store.published == [] and store.refunds == {}


async def test_a_refund_of_an_order_held_for_risk_review_is_refused_for_good_and_never_reaches_the_provider() -> None:
    store = paid_store()
    store.orders["ord_1"] = replace(store.orders["ord_1"], review_status="held")
    provider = ScriptedProvider(refunds=[RefundAnswer("succeeded", refund_id="rf")], queries=[])
    with pytest.raises(PermanentFailure) as refused:
        await refund(store, provider)
    assert refused.value.label == "order_under_review"
    assert provider.calls == [] and store.published == [] and store.refunds == {}


def follow_up(store: Store, *providers: PaymentProvider, at: datetime, stuck_after_s: float = 86400) -> RefundFollowUp:
    return RefundFollowUp(
        lambda: InMemoryPayments(store),
        Providers(*providers),
        ask_timeout_s=1.0,
        stuck_after_s=stuck_after_s,
        clock=lambda: at,
    )


async def test_a_refund_left_pending_is_asked_about_again_once_due_and_its_outcome_announced_once() -> None:
    store = paid_store()
    pending = RefundAnswer("pending", refund_id="50300", reason="PROCESSING")
    provider = ScriptedProvider([pending], [pending] * MAX_ATTEMPTS)
    await refund(store, provider)
    due_at, _ = store.refund_asks["ord_1"]
    assert due_at is not None

    provider.queries = [RefundAnswer("succeeded", refund_id="50300")]
    assert await follow_up(store, provider, at=due_at - timedelta(seconds=1)).round() == 0  # not due yet
    assert await follow_up(store, provider, at=due_at).round() == 1
    assert provider.calls[-1:] == ["query"]  # a pending refund is only queried, never requested again
    assert outcomes(store) == [RefundSucceeded]
    assert store.refunds["ord_1"][0] == RefundAnswer("succeeded", refund_id="50300")
    assert await follow_up(store, provider, at=due_at + timedelta(days=1)).round() == 0  # nothing left in flight
    await refund(store, provider, event_id="cmd-2")  # the reconciler asks again: the outcome is repeated
    assert outcomes(store) == [RefundSucceeded, RefundSucceeded]


async def test_a_refund_whose_asker_died_is_queried_then_requested_again_under_the_same_id_by_the_follow_up() -> None:
    store = paid_store()
    async with InMemoryPayments(store) as tx:  # recorded as requested; the process died before it asked
        order = store.orders["ord_1"]
        request = RefundRequest(order.order_id, deterministic_id("refund", "ord_1"), "tx1", 600, 600, "CNY", "late")
        await tx.begin_refund(request, T0)
    provider = ScriptedProvider([RefundAnswer("succeeded", refund_id="rf_9")], [RefundAnswer("unknown")])
    assert await follow_up(store, provider, at=T0).round() == 1
    assert provider.calls == ["query", "refund"]
    assert provider.requests == [request]
    assert outcomes(store) == [RefundSucceeded]


async def test_a_pending_refund_whose_query_goes_unanswered_is_not_requested_again_and_is_asked_later_than_before() -> (
    None
):
    store = paid_store()
    pending = RefundAnswer("pending", refund_id="50300")
    provider = ScriptedProvider([pending], [pending] * MAX_ATTEMPTS)
    await refund(store, provider)
    first_due, _ = store.refund_asks["ord_1"]
    assert first_due is not None
    provider.queries = [TimeoutError("read timeout")]
    assert await follow_up(store, provider, at=first_due).round() == 1
    assert provider.calls[-1] == "query" and provider.calls.count("refund") == 1
    assert store.refunds["ord_1"][0].status == "pending" and store.published == []
    next_due, _ = store.refund_asks["ord_1"]
    assert next_due is not None and next_due - first_due == 2 * (follow_up_at(T0, MAX_ATTEMPTS) - T0)  # backed off


async def test_a_command_repeated_while_its_refund_is_at_the_provider_asks_nothing_and_announces_nothing() -> None:
    store = paid_store()
    pending = RefundAnswer("pending", refund_id="50300")
    provider = ScriptedProvider([pending], [pending] * MAX_ATTEMPTS)
    await refund(store, provider)
    asked = len(provider.calls)
    await refund(store, provider, event_id="cmd-2")
    assert len(provider.calls) == asked and store.published == []


async def test_a_refund_still_without_an_outcome_a_day_after_it_was_requested_opens_one_support_case() -> None:
    store = paid_store()
    pending = RefundAnswer("pending", refund_id="50300")
    provider = ScriptedProvider([pending], [pending] * MAX_ATTEMPTS)
    await refund(store, provider)
    requested_at = store.refunds_requested_at["ord_1"]
    provider.queries = [pending] * 3
    await follow_up(store, provider, at=requested_at + timedelta(hours=23)).round()
    assert store.cases == {}
    await follow_up(store, provider, at=requested_at + timedelta(hours=25)).round()
    await follow_up(store, provider, at=requested_at + timedelta(hours=30)).round()
    ((case, _),) = store.cases.values()
    assert (case.kind, case.severity) == (CaseKind.NEEDS_SUPPORT, CaseSeverity.WARNING)
    assert case.reason == "refund of 6.00 CNY pending at alipay for 25 h: check it there"
    assert store.refunds["ord_1"][0].status == "pending" and store.published == []


class Shown:
    """A RefundObserver that keeps what each round showed it."""

    def __init__(self) -> None:
        self.rounds: list[tuple[dict[str, int], float]] = []

    def refunds_in_flight(self, counts: Mapping[str, int], oldest_s: float) -> None:
        self.rounds.append((dict(counts), oldest_s))


async def test_each_follow_up_round_shows_the_refunds_it_left_in_flight_and_none_once_they_have_ended() -> None:
    store = paid_store()
    pending = RefundAnswer("pending", refund_id="50300")
    await refund(store, ScriptedProvider([pending], [pending] * MAX_ATTEMPTS))
    requested_at, shown = store.refunds_requested_at["ord_1"], Shown()

    async def round_at(hours: int, answer: RefundAnswer) -> int:
        at, provider = requested_at + timedelta(hours=hours), ScriptedProvider([], [answer])
        uow = functools.partial(InMemoryPayments, store)
        return await RefundFollowUp(
            uow, Providers(provider), ask_timeout_s=1.0, clock=lambda: at, observer=shown
        ).round()

    assert await round_at(2, pending) == 1
    assert await round_at(4, RefundAnswer("succeeded", refund_id="50300")) == 1
    assert shown.rounds == [({"pending": 1}, 2 * 3600.0), ({}, 0.0)]
