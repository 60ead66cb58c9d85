"""Refunds: executes IssueRefund once per order at the provider that took the money, querying before any retry.

A refund moves the platform's money back to a payment method, so it needs a payment behind it: payments refunds
only an order it knows as paid (its provider confirmed the payment), neither credited nor compensated (the
reconciler refunds only after the ledger's final block), not refunded yet, to the user who paid, in
the currency and for the amount paid (never above: the provider is asked for the order's amount). Anything else
is not a refund the reconciler would ask for (it refunds only orders it saw paid on the payments topic, with the
payment's amount): whoever sent it, it is refused for good (PermanentFailure: dead-lettered with its reason,
counted by it), and nothing is asked of the provider or recorded. A repeated command for a refunded order only
repeats the outcome. An order held for risk review is refused too: its review decides (released, it is credited;
rejected, the rejection's block is refunded).

A refund is on record from before the provider is first asked until the provider says how it ended (`requested`,
then `pending` while the provider has accepted it and not finished), so nobody credits the order beside it: support
refuses a re-drive or a refund of an order with a refund in flight. A refund whose outcome the provider has not told
when its command is done is asked about again by RefundFollowUp, with backoff, until it has; its outcome is then
recorded and announced once, as the command's own would have been.

The refund goes through the PaymentProvider registered under the order's provider, with a refund id derived from
the order (the provider's idempotency key: WeChat Pay's out_refund_no, Alipay's out_request_no), so asking again,
from any instance or after a restart, never refunds twice.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Protocol

from contracts.base import clip
from contracts.codec import Envelope, deterministic_id
from contracts.commands import IssueRefund
from contracts.events import CaseKind, CaseRequested, CaseSeverity, RefundFailed, RefundSucceeded
from contracts.topics import Topic
from payments.domain import Order, PaymentStatus, RefundRequest
from payments.ports import (
    DueRefund,
    PaymentProvider,
    PaymentProviders,
    PaymentsUnitOfWork,
    RefundAnswer,
    UnitOfWorkFactory,
)
from payments.support import SETTLED_CREDITED
from servicekit.errors import log_failed_round
from servicekit.money import in_major_units
from servicekit.rejections import PermanentFailure

log = logging.getLogger(__name__)

CONSUMER = "payments.commands"
MAX_ATTEMPTS = 3
PENDING_WAIT_S = 1.0
"""After a "pending" answer (accepted, not finished), the wait before the next query, times the attempt."""
FINAL = frozenset({"succeeded", "failed"})
FOLLOW_UP_FIRST_S = 30.0
FOLLOW_UP_MOST_S = 3600.0
"""The follow-up asks about a refund in flight FOLLOW_UP_FIRST_S after the last ask, doubling up to this."""
CASE_REASON_LIMIT = 200  # CaseRequested.reason's most
STUCK_AFTER_S = 24 * 3600.0
"""A refund still without an outcome this long after it was requested opens a needs_support case (one per order):
the user waits for the money, and a person checks the refund at the provider. The follow-up keeps asking, and the
case is resolved when the order ends refunded."""

Sleep = Callable[[float], Awaitable[None]]


async def _ask(call: Awaitable[RefundAnswer]) -> RefundAnswer:
    """The provider's answer; a request that timed out or lost its connection is an unknown outcome."""
    try:
        return await call
    except (TimeoutError, OSError) as exc:
        return RefundAnswer("unknown", reason=f"no answer: {exc!r}"[:200])


async def _execute(provider: PaymentProvider, request: RefundRequest, sleep: Sleep) -> tuple[RefundAnswer, int]:
    """Request the refund; after an unknown outcome (a timeout), ask the provider what became of it before
    requesting it again, and once more before giving up. A refund the provider accepted but has not finished
    ("pending") is only queried, never requested again, even after a query that went unanswered: it stays pending
    (a provider may refuse a second request under the id of a refund it is still making, and a refusal reads as
    failed, which lets support re-drive the credit beside the refund). Only the provider's own answer is final: a
    refund that is still pending, or whose outcome is still unknown, after the last query is returned as it is, so a
    refund that happened is never reported failed."""
    answer = accepted = RefundAnswer("unknown")
    for attempt in range(1, MAX_ATTEMPTS + 1):
        if answer.status == "unknown" and accepted.status != "pending":  # the provider knows of no refund: (re)request
            answer = await _ask(provider.refund(request))
        if answer.status in FINAL:
            return answer, attempt
        if answer.status == "pending":
            accepted = answer
            await sleep(PENDING_WAIT_S * attempt)
        answer = await _ask(provider.query_refund(request.order_id, request.refund_id))
        if answer.status in FINAL:
            return answer, attempt
    return (accepted if answer.status == "unknown" and accepted.status == "pending" else answer), MAX_ATTEMPTS


def asking_lease_s(provider_timeout_s: float) -> float:
    """How long a command's own asks may take at most (MAX_ATTEMPTS requests and queries, each within the provider
    timeout, and the pauses after pending answers), and a minute more: the follow-up takes the refund only after it."""
    pauses = PENDING_WAIT_S * MAX_ATTEMPTS * (MAX_ATTEMPTS + 1) / 2
    return 2 * MAX_ATTEMPTS * provider_timeout_s + pauses + 60


def _announce(tx: PaymentsUnitOfWork, order: Order, answer: RefundAnswer) -> None:
    now = datetime.now(UTC)
    if answer.status == "succeeded":
        tx.publish(
            Topic.PAYMENTS_EVENTS,
            RefundSucceeded(
                order_id=order.order_id,
                user_id=order.user_id,
                amount=order.amount,
                currency=order.currency,
                refund_id=answer.refund_id or "unknown",
                refunded_at=now,
            ),
            event_id=deterministic_id("RefundSucceeded", order.order_id),
        )
    else:
        tx.publish(
            Topic.PAYMENTS_EVENTS,
            RefundFailed(
                order_id=order.order_id,
                user_id=order.user_id,
                reason=answer.reason[:200] or "failed",
                failed_at=now,
            ),
            event_id=deterministic_id("RefundFailed", order.order_id),
        )


def refusal(command: IssueRefund, order: Order | None) -> PermanentFailure | None:
    """Why `command` asks for a refund no payment of `order` stands behind, if it does."""
    if order is None:
        return PermanentFailure("no such order", label="unknown_order")
    if order.payment_status is not PaymentStatus.SUCCEEDED or order.provider is None or order.provider_txn_id is None:
        return PermanentFailure(f"order is not paid (payment {order.payment_status.value})", label="order_not_paid")
    if order.status in SETTLED_CREDITED:  # the user has the money in the wallet: a refund would pay it twice
        return PermanentFailure(f"order is {order.status}: a refund would pay it twice", label="order_credited")
    if order.review_status == "held":  # released, it is credited; rejected, the rejection refunds it
        return PermanentFailure(
            "order is held for risk review: a refund would come beside its credit", label="order_under_review"
        )
    if command.currency == order.currency and command.amount > order.amount:
        return PermanentFailure(
            f"refund of {in_major_units(command.amount, command.currency)} is above the"
            f" {in_major_units(order.amount, order.currency)} paid",
            label="above_amount_paid",
        )
    asked, paid = (command.user_id, command.amount, command.currency), (order.user_id, order.amount, order.currency)
    if asked != paid:
        return PermanentFailure(f"refund {asked} does not match the payment {paid}", label="refund_mismatch")
    return None


def _request(order: Order, reason: str) -> RefundRequest:
    assert order.provider_txn_id is not None  # refusal() let only a paid order through
    refund_id = deterministic_id("refund", order.order_id)  # the provider's idempotency key: one per order
    return RefundRequest(
        order.order_id, refund_id, order.provider_txn_id, order.amount, order.amount, order.currency, reason
    )


def follow_up_at(now: datetime, attempts: int) -> datetime:
    """When to ask the provider again about a refund in flight after `attempts` asks: FOLLOW_UP_FIRST_S, doubling
    up to FOLLOW_UP_MOST_S."""
    return now + timedelta(seconds=min(FOLLOW_UP_FIRST_S * 2 ** max(attempts - 1, 0), FOLLOW_UP_MOST_S))


async def handle_issue_refund(
    command: IssueRefund,
    envelope: Envelope,
    *,
    uow: UnitOfWorkFactory,
    providers: PaymentProviders,
    provider_timeout_s: float,
    sleep: Sleep = asyncio.sleep,
) -> None:
    """Refund the order to its original payment method, at the provider that took the payment, once, and say how
    it went. The refund is on record as requested before the provider is asked, and committed: from then on
    support refuses to re-drive or refund the order, and if this process dies while asking, the follow-up asks the
    provider from its due time. A refund the provider still reports pending, or whose outcome it never told, after
    the last query stays on record in flight, and the follow-up (RefundFollowUp) asks again later until the
    provider says how it ended. No database transaction is held while the provider is asked."""
    async with uow() as tx:
        if not await tx.mark_processed(CONSUMER, envelope.event_id):
            return
        order = await tx.get(command.order_id, for_update=True)
        refused = refusal(command, order)
        if refused is not None:
            log.warning("refund of order %s refused: %s (event %s)", command.order_id, refused, envelope.event_id)
            raise refused  # rolls the unit of work back: the command is not even marked processed
        assert order is not None
        assert order.provider is not None
        done = await tx.refund_of(command.order_id)
        if done is not None:
            if done.status in FINAL:
                _announce(tx, order, done)  # repeat the outcome; the id makes it a no-op downstream
            return  # in flight: whoever asked it, or the follow-up, records and announces its outcome
        provider = providers.get(order.provider)
        if provider is None:  # configuration, not the command, is wrong: replay it once the provider is back
            raise PermanentFailure(f"provider {order.provider!r} is not configured", label="provider_not_configured")
        request = _request(order, command.reason)
        await tx.begin_refund(request, datetime.now(UTC) + timedelta(seconds=asking_lease_s(provider_timeout_s)))
    answer, attempts = await _execute(provider, request, sleep)
    await _conclude(uow, order, answer, attempts, datetime.now(UTC))


async def _conclude(
    uow: UnitOfWorkFactory,
    order: Order,
    answer: RefundAnswer,
    attempts: int,
    now: datetime,
    *,
    stuck: CaseRequested | None = None,
) -> None:
    """Record the provider's answer to the refund of `order` and announce an outcome, once; an answer that is no
    outcome leaves the refund in flight, asked again at its follow-up time (and opens the `stuck` case, if any)."""
    final = answer.status in FINAL
    due_at = None if final else follow_up_at(now, attempts)
    async with uow() as tx:
        recorded = await tx.save_refund(order.order_id, answer, attempts, due_at)
        if recorded and final:
            _announce(tx, order, answer)
        if recorded and not final and stuck is not None and await tx.open_case(stuck, _stuck_case_id(order)):
            log.error("order %s: support case opened: %s", order.order_id, stuck.reason)
    if final:
        log.warning("refund of order %s at %s: %s %s", order.order_id, order.provider, answer.status, answer.reason)
    else:
        log.warning(
            "refund of order %s is still %s at %s after %d asks%s: asking again at %s",
            order.order_id,
            answer.status,
            order.provider,
            attempts,
            f" ({answer.reason})" if answer.reason else "",
            due_at,
        )


class RefundObserver(Protocol):
    """What the follow-up shows of the refunds in flight, read from the database: every process shows the same."""

    def refunds_in_flight(self, counts: Mapping[str, int], oldest_s: float) -> None:
        """How many refunds are in flight in each state ("requested", "pending"; a state with none left out), and
        how long ago the oldest of them was requested (0 when none is)."""


class RefundFollowUp:
    """`run` as a service task: ask the providers about the refunds in flight that are due (requested by a process
    that died before recording the answer, or pending at the provider, or never answered), one query each (and
    the request again, under the same refund id, when the provider has no record of a refund it may never have
    had), and record each outcome. Every payments process runs one; a due refund is taken by one at a time. After
    each round the `observer`, if any, is shown the refunds in flight, so a refund stuck at a provider shows on a
    dashboard before its support case opens."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        providers: PaymentProviders,
        *,
        ask_timeout_s: float,
        batch: int = 5,
        idle_s: float = 5.0,
        stuck_after_s: float = STUCK_AFTER_S,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        observer: RefundObserver | None = None,
    ) -> None:
        self._uow = uow
        self._observer = observer
        self._stuck_after = timedelta(seconds=stuck_after_s)
        self._providers = providers
        self._batch = batch
        self._idle_s = idle_s
        # Held past a round's asks (a query and a request per refund, and the query an adapter may make after its
        # request, each within the provider timeout): no other process takes a refund this one is still asking about.
        self._lease = timedelta(seconds=batch * 3 * ask_timeout_s + 60)
        self._clock = clock

    async def round(self) -> int:
        """Ask about the refunds due now, then show the refunds in flight; how many were taken."""
        now = self._clock()
        async with self._uow() as tx:
            due = await tx.claim_refunds(now, now + self._lease, self._batch)
            orders = await tx.get_many([d.order_id for d in due])
        for refund in due:
            order = orders[refund.order_id]
            provider = None if order.provider is None else self._providers.get(order.provider)
            if provider is None:  # asked again once its lease ends: the provider may be configured by then
                log.error("refund of order %s waits: provider %r is not configured", order.order_id, order.provider)
                await self._stuck(order, refund, f"waiting for {order.provider}, which is not configured,")
                continue
            answer = await self._ask_about(provider, order, refund)
            now = self._clock()
            state = "pending at" if "pending" in (answer.status, refund.status) else "unanswered by"
            stuck = self._case(order, refund, f"{state} {order.provider}", now)
            await _conclude(self._uow, order, answer, refund.attempts, now, stuck=stuck)
        if self._observer is not None:
            await self._show_in_flight(self._observer)
        return len(due)

    async def _ask_about(self, provider: PaymentProvider, order: Order, refund: DueRefund) -> RefundAnswer:
        """The provider's answer about the refund of `order`. An adapter that fails in a way `_ask` does not read
        as an answer (a provider's answer it cannot read, a bug) fails this refund only: it is logged and taken as
        no answer, so the refund is asked again after the backoff of an unanswered query, and the round's other
        refunds are still asked."""
        try:
            return await _follow_up(provider, _request(order, refund.reason), refund.status)
        except Exception as exc:  # noqa: BLE001 - logged, with its traceback if a bug
            now = self._clock()
            again_s = (follow_up_at(now, refund.attempts) - now).total_seconds()
            log_failed_round(log, f"refund follow-up of order {order.order_id} at {order.provider}", exc, again_s)
            return RefundAnswer("unknown", reason=f"asking failed: {exc!r}"[:200])

    async def _show_in_flight(self, observer: RefundObserver) -> None:
        """Show `observer` the refunds in flight as the round left them."""
        async with self._uow() as tx:
            in_flight = await tx.refunds_in_flight()
        oldest = min((s.oldest_requested_at for s in in_flight), default=None)
        waited = 0.0 if oldest is None else max((self._clock() - oldest).total_seconds(), 0.0)
        observer.refunds_in_flight({s.status: s.count for s in in_flight}, waited)

    def _case(self, order: Order, refund: DueRefund, state: str, now: datetime) -> CaseRequested | None:
        """The support case for a refund still without an outcome STUCK_AFTER_S after it was requested, if it is."""
        waited = now - refund.requested_at
        if waited < self._stuck_after:
            return None
        return CaseRequested(
            order_id=order.order_id,
            user_id=order.user_id,
            kind=CaseKind.NEEDS_SUPPORT,
            severity=CaseSeverity.WARNING,
            reason=clip(
                f"refund of {in_major_units(order.amount, order.currency)} {state}"
                f" for {waited.total_seconds() / 3600:.0f} h:"
                " check it there",
                CASE_REASON_LIMIT,
            ),
            requested_at=now,
        )

    async def _stuck(self, order: Order, refund: DueRefund, state: str) -> None:
        """Open the support case of a refund nobody can ask about, once it is stuck."""
        case = self._case(order, refund, state, self._clock())
        if case is not None:
            async with self._uow() as tx:
                if await tx.open_case(case, _stuck_case_id(order)):
                    log.error("order %s: support case opened: %s", order.order_id, case.reason)

    async def run(self) -> None:
        """Until cancelled. A round that fails (the database away, or a bug outside the provider adapters, whose
        failures fail only their refund) is logged and tried again: a refund in flight stays on record and is taken
        again when its lease ends."""
        while True:
            try:
                taken = await self.round()
            except Exception as exc:  # noqa: BLE001 - logged, with its traceback if a bug
                taken = 0
                log_failed_round(log, "refund follow-up", exc, self._idle_s)
            if taken < self._batch:
                await asyncio.sleep(self._idle_s)


def _stuck_case_id(order: Order) -> str:
    """One support case per order for its stuck refund: a repeat opens none."""
    return deterministic_id("refund_stuck", order.order_id)


async def _follow_up(provider: PaymentProvider, request: RefundRequest, status: str) -> RefundAnswer:
    """One query about a refund in flight; a refund the provider has no record of is requested again (same id)
    unless the provider accepted it before (pending), when "unknown" is only a query that went unanswered."""
    answer = await _ask(provider.query_refund(request.order_id, request.refund_id))
    if answer.status == "unknown" and status == "requested":
        answer = await _ask(provider.refund(request))
    return answer
