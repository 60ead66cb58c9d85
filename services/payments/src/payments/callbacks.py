"""Provider callbacks: the wire format (a JSON body signed in the X-Signature header) and the use case that
verifies and applies them. A provider known by its adapter rather than an HMAC secret (WeChat Pay, Alipay)
has its callbacks verified and read by that adapter. A provider's answer to our query that an order is paid
is applied here too, by the same rule and in the same audit, so a payment is applied once however many
callbacks and queries say so, in whatever order.

Callbacks are applied in groups: the HTTP adapter gathers the callbacks that arrive together, and one
transaction locks their orders (in order-id order), decides each callback, keeps each one for audit and
announces what changed; each is answered after that commit. Every callback is decided against its order as
the callbacks before it in the group left it, exactly as one transaction after another would: of two
callbacks for one order in one group, the first applies and the second is a duplicate or refused.
"""

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from contracts.base import Currency, MinorUnits, OrderId, UtcDatetime, clip
from contracts.codec import deterministic_id
from contracts.events import CaseKind, CaseRequested, CaseSeverity
from payments import domain
from payments.announcements import announce_payment
from payments.domain import (
    CallbackAck,
    CallbackRejected,
    Order,
    Outcome,
    Payers,
    PaymentNotice,
    PaymentQuery,
    ProviderReply,
    ReviewRule,
)
from payments.ports import Clock, PaymentProvider, PaymentProviders, PaymentsUnitOfWork, UnitOfWorkFactory
from servicekit.logs import about
from servicekit.signatures import SignatureError, verify

log = logging.getLogger(__name__)


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


@dataclass(frozen=True, slots=True)
class Callback:
    """One provider callback as it came: the provider named in the URL, the raw body, its X-Signature, and
    the request's other headers (which a provider's adapter may need)."""

    provider: str
    body: bytes
    signature: str | None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CallbackResult:
    """The HTTP answer to a callback: status code, stable code and a sentence; and, for a provider whose
    adapter verified it, the answer in that provider's own form (`reply`), which is what the provider gets."""

    status_code: int
    code: str
    detail: str
    order_id: str | None = None
    outcome: Outcome = Outcome.REJECTED
    paid_at_clamped: bool = False
    reply: ProviderReply | None = None
    paid_at: datetime | None = None
    """For a payment applied: when its provider states it was paid (after any clamping)."""
    placed_at: datetime | None = None
    """For a payment applied: when its order was placed."""


_ANSWERS = {
    Outcome.PAID: (200, "applied"),
    Outcome.FAILED: (200, "applied"),
    Outcome.DUPLICATE: (200, "duplicate"),
    Outcome.IGNORED: (200, "ignored"),
}
_REJECTIONS = {"amount_mismatch": 422, "already_paid": 409, "wrong_provider": 409}
REASON_LIMIT = 200
"""The most characters a support case's reason may have (CaseRequested's `reason`)."""
DEFAULT_MAX_SKEW = timedelta(minutes=5)
CLAMPED = "paid_at clamped to its arrival"
"""In a callback's audited reason: the provider's paid_at was too far ahead, or before the order was placed."""


@dataclass
class _Group:
    """One group's transaction, the orders it locked as the group changes them, and when it runs."""

    tx: PaymentsUnitOfWork
    orders: dict[str, Order]
    cleared_elsewhere: set[str]
    now: datetime
    review: ReviewRule | None
    payers: Payers
    max_skew: timedelta = DEFAULT_MAX_SKEW


async def handle_callbacks(
    callbacks: Sequence[Callback],
    *,
    secrets: dict[str, list[str]],
    uow: UnitOfWorkFactory,
    clock: Clock,
    payers: Payers,
    review: ReviewRule | None = None,
    providers: PaymentProviders | None = None,
    max_skew: timedelta = DEFAULT_MAX_SKEW,
) -> list[CallbackResult]:
    """Verify, parse and apply a group of callbacks in one transaction; every callback is kept for audit with
    its outcome. A payment that the review rule holds publishes OrderHeld instead of PaymentSucceeded.
    Providers with an HMAC secret in `secrets` (simulated ones: development only) are checked here; others by
    their adapter in `providers`. A provider that does not take the order's channel (`payers`) is refused."""
    checked = [await _check(c, secrets, providers, clock) for c in callbacks]
    results = await _decide(callbacks, checked, uow=uow, clock=clock, payers=payers, review=review, max_skew=max_skew)
    return [_in_providers_form(r, _adapter(c, secrets, providers)) for c, r in zip(callbacks, results, strict=True)]


def _adapter(
    callback: Callback, secrets: dict[str, list[str]], providers: PaymentProviders | None
) -> PaymentProvider | None:
    """The adapter that verifies and answers this provider's callbacks; None when an HMAC secret does."""
    if secrets.get(callback.provider) or providers is None:
        return None
    return providers.get(callback.provider)


def _in_providers_form(result: CallbackResult, adapter: PaymentProvider | None) -> CallbackResult:
    """The result with the answer its provider expects (Alipay's `success`, WeChat Pay's 204 or FAIL)."""
    if adapter is None:
        return result
    ack = CallbackAck(result.status_code, result.code, result.detail, result.order_id)
    return replace(result, reply=adapter.reply(ack))


async def handle_paid_answers(
    answers: Sequence[PaymentQuery],
    *,
    uow: UnitOfWorkFactory,
    clock: Clock,
    payers: Payers,
    review: ReviewRule | None = None,
    max_skew: timedelta = DEFAULT_MAX_SKEW,
) -> list[CallbackResult]:
    """Providers' answers to our queries that orders were paid, applied exactly as their callbacks would be (one
    transaction, the same rule, the same audit, with the answer as the body): once, whatever comes before or
    after them."""
    calls = [Callback(a.provider, _answer_body(a), None) for a in answers]
    checked: list[tuple[CallbackResult | None, PaymentNotice | None]] = [(None, a.notice()) for a in answers]
    assert all(notice is not None for _, notice in checked), "only a paid answer is applied"
    return await _decide(calls, checked, uow=uow, clock=clock, payers=payers, review=review, max_skew=max_skew)


def _answer_body(answer: PaymentQuery) -> bytes:
    """What the audit keeps of a query's answer, marked as an answer and not a callback."""
    return orjson.dumps(
        {
            "source": "query",
            "order_id": answer.order_id,
            "state": answer.state.value,
            "provider_txn_id": answer.provider_txn_id,
            "amount": answer.amount,
            "currency": answer.currency,
            "paid_at": answer.paid_at.isoformat() if answer.paid_at else None,
        }
    )


async def _decide(
    callbacks: Sequence[Callback],
    checked: Sequence[tuple[CallbackResult | None, PaymentNotice | None]],
    *,
    uow: UnitOfWorkFactory,
    clock: Clock,
    payers: Payers,
    review: ReviewRule | None,
    max_skew: timedelta = DEFAULT_MAX_SKEW,
) -> list[CallbackResult]:
    async with uow() as tx:
        orders = await tx.get_many({n.order_id for _, n in checked if n is not None}, for_update=True)
        cleared = await _cleared_elsewhere(tx, orders, review)
        group = _Group(tx, orders, cleared, _now(clock), review, payers, max_skew)
        return [
            await _apply(group, c, refused, notice) for c, (refused, notice) in zip(callbacks, checked, strict=True)
        ]


async def handle_callback(
    provider: str,
    body: bytes,
    signature: str | None,
    *,
    secrets: dict[str, list[str]],
    uow: UnitOfWorkFactory,
    clock: Clock,
    payers: Payers,
    review: ReviewRule | None = None,
) -> CallbackResult:
    """One callback: a group of one."""
    (result,) = await handle_callbacks(
        [Callback(provider, body, signature)], secrets=secrets, uow=uow, clock=clock, payers=payers, review=review
    )
    return result


def _now(clock: Clock) -> datetime:
    return datetime.fromtimestamp(clock.now(), UTC)


async def _cleared_elsewhere(tx: PaymentsUnitOfWork, orders: dict[str, Order], review: ReviewRule | None) -> set[str]:
    """The users who may be held for review and have a cleared top-up outside the group's orders (asked once
    per group, and only when the rule could hold one of them)."""
    if review is None:
        return set()
    candidates = {o.user_id for o in orders.values() if o.amount > review.first_topup_above_minor}
    return await tx.cleared_users(candidates, excluding=orders.keys()) if candidates else set()


async def _apply(
    group: _Group, callback: Callback, refused: CallbackResult | None, notice: PaymentNotice | None
) -> CallbackResult:
    tx = group.tx
    if notice is None:
        assert refused is not None
        await _audit(tx, callback, refused.order_id, refused.outcome.value, f"{refused.code}: {refused.detail}")
        return refused
    order = group.orders.get(notice.order_id)
    if order is None:
        await _audit(tx, callback, notice.order_id, "rejected", "unknown_order")
        return CallbackResult(404, "unknown_order", f"no order {notice.order_id}", notice.order_id)
    stated = notice.paid_at
    notice, clamped = domain.bounded(notice, group.now, group.max_skew, order.created_at)
    if clamped:
        log.warning(
            "order %s: %s put paid_at more than %s ahead of its arrival or before the order was placed; paid_at is"
            " when it arrived",
            order.order_id,
            callback.provider,
            group.max_skew,
            extra=about(order.order_id),
        )
    decision = domain.decide(order, notice, group.payers)
    why = f"{decision.code}: {decision.reason}" if decision.code else decision.reason  # the amounts, for a person
    if clamped:
        # Kept with the callback, so ProviderClockSkewed's runbook finds the payments and the times the provider gave.
        why += f"; {CLAMPED} (the provider said {stated.isoformat()})"
    await _audit(tx, callback, order.order_id, decision.outcome.value, why)
    if decision.outcome is Outcome.REJECTED:
        log.warning("callback for order %s rejected: %s", order.order_id, decision.reason, extra=about(order.order_id))
        if notice.succeeded:
            await _refused_charge(tx, order, notice, decision.reason, group.now)
        return CallbackResult(_REJECTIONS[decision.code], decision.code, decision.reason, order.order_id)
    if decision.outcome in (Outcome.PAID, Outcome.FAILED):
        applied = decision.order
        if group.review is not None and decision.outcome is Outcome.PAID:
            applied = group.review.hold(applied, not _has_cleared_topup(group, order), group.now)
        group.orders[order.order_id] = applied
        await tx.save(applied)
        announce_payment(tx, applied, group.now)
        log.info(
            "order %s %s via %s %s",
            order.order_id,
            decision.outcome,
            callback.provider,
            notice.provider_txn_id,
            extra=about(order.order_id),
        )
    status, code = _ANSWERS[decision.outcome]
    paid_at, placed_at = (notice.paid_at, order.created_at) if decision.outcome is Outcome.PAID else (None, None)
    return CallbackResult(
        status, code, decision.reason, order.order_id, decision.outcome, clamped, paid_at=paid_at, placed_at=placed_at
    )


async def _refused_charge(
    tx: PaymentsUnitOfWork, order: Order, notice: PaymentNotice, refused: str, now: datetime
) -> None:
    """A provider's signed word that it charged the user for `order`, which payments refuses (a second charge, another
    amount, a provider that does not take the order's channel): no credit and no refund follows that money, so a
    support case (refused_charge) asks a person to refund it at the provider. One case per charge (its event id is
    the charge's), at most one open per order; the provider's repeats of the notice open nothing more."""
    charge = f"{notice.provider} charged {notice.amount} {notice.currency} (transaction {notice.provider_txn_id})"
    request = CaseRequested(
        order_id=order.order_id,
        user_id=order.user_id,
        kind=CaseKind.REFUSED_CHARGE,
        severity=CaseSeverity.PAGE,
        reason=clip(f"{charge}, refused: {refused}; refund it at {notice.provider}", REASON_LIMIT),
        requested_at=now,
    )
    event_id = deterministic_id("refused_charge", order.order_id, notice.provider, notice.provider_txn_id)
    if await tx.open_case(request, event_id):
        log.error(
            "order %s: support case opened for a charge payments refused: %s",
            order.order_id,
            request.reason,
            extra=about(order.order_id),
        )


def _has_cleared_topup(group: _Group, order: Order) -> bool:
    """Whether the order's user has another cleared top-up: outside the group, or in it as it stands now."""
    if order.user_id in group.cleared_elsewhere:
        return True
    return any(
        o.user_id == order.user_id and o.order_id != order.order_id and domain.cleared(o) for o in group.orders.values()
    )


REFUSED_BODY_KEPT = 4096
"""The bytes of a refused or rejected callback's body kept for audit: enough to see what was sent, while
anyone can post unsigned junk as often as they like (an accepted callback, signed by the provider, is kept whole)."""

_KEPT_WHOLE = frozenset({Outcome.PAID.value, Outcome.FAILED.value, Outcome.DUPLICATE.value, Outcome.IGNORED.value})


REFUSED_SIGNATURE_KEPT = 512
"""The characters of a refused callback's signature header kept: a real one is a few hundred (an RSA-2048 signature
in base64 and its parameters); the header of anonymous junk can be as long as the server takes."""


async def _audit(tx: PaymentsUnitOfWork, callback: Callback, order_id: str | None, outcome: str, reason: str) -> None:
    body, signature = callback.body, callback.signature
    if outcome not in _KEPT_WHOLE and len(body) > REFUSED_BODY_KEPT:
        reason = f"{reason} (body cut to its first {REFUSED_BODY_KEPT} of {len(body)} bytes)"
        body = body[:REFUSED_BODY_KEPT]
    if outcome not in _KEPT_WHOLE and signature is not None and len(signature) > REFUSED_SIGNATURE_KEPT:
        reason = f"{reason} (signature cut to its first {REFUSED_SIGNATURE_KEPT} of {len(signature)} characters)"
        signature = signature[:REFUSED_SIGNATURE_KEPT]
    await tx.record_callback(
        provider=callback.provider,
        order_id=order_id,
        outcome=outcome,
        reason=reason,
        signature=signature,
        body=body,
    )


async def _check(
    callback: Callback, secrets: dict[str, list[str]], providers: PaymentProviders | None, clock: Clock
) -> tuple[CallbackResult | None, PaymentNotice | None]:
    active = secrets.get(callback.provider)
    adapter = _adapter(callback, secrets, providers)
    if adapter is not None:
        try:
            verified = await adapter.verify_callback(callback.body, {**callback.headers})
        except CallbackRejected as exc:
            return CallbackResult(exc.status_code, exc.code, exc.detail), None
        if verified.notice is None:  # a refund's progress, a payment awaited, a trade closed unpaid: nothing to apply
            detail = f"{verified.event} changes no payment"
            return CallbackResult(200, "ignored", detail, verified.order_id, Outcome.IGNORED), None
        return None, verified.notice
    if not active:
        return CallbackResult(404, "unknown_provider", f"no payment provider named {callback.provider!r}"), None
    try:
        verify(callback.signature, callback.body, active, clock.now())
    except SignatureError as exc:
        return CallbackResult(401, exc.code, exc.detail), None
    try:
        parsed = CallbackBody.model_validate_json(callback.body)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
        return CallbackResult(422, "invalid_callback", problems[:500]), None
    return None, PaymentNotice(
        order_id=parsed.order_id,
        provider=callback.provider,
        provider_txn_id=parsed.provider_txn_id,
        succeeded=parsed.status == "succeeded",
        amount=parsed.amount,
        currency=parsed.currency,
        paid_at=parsed.paid_at,
    )
