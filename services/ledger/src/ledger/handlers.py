"""Ledger use cases: credit a paid order exactly once; retry, block and compensate on the reconciler's command.

A consumed batch is applied in one unit of work with a handful of statements: the locks of all its orders (in
one fixed order), its event ids recorded at once (which says which messages are redeliveries), the books of its
orders and users read at once, every message decided in order against that view (`BatchDecisions`, no I/O), and
the decided changes written set-based. Every credit and block decision for an order runs under that order's
lock, so "credited" and "blocked" exclude each other: a refund is only ever issued for an order the ledger has
blocked.

Every credit rests on a payment. A PaymentSucceeded is one (the payments service publishes it only after the
provider's signed confirmation), and the ledger records its facts (user, amount, currency, provider transaction
id) the first time it consumes it, before anything else is decided, so even a credit the fault knob drops (the
very case the reconciler repairs) leaves its payment on record. A RetryCredit is not a payment: anyone able to
write the commands topic could send one. So a retry credits only an order whose recorded payment it matches in
full; one that names no payment, or differs from the recorded payment in any field, is refused for good at once
(PermanentFailure: dead-lettered with its reason, counted by it) and moves nothing.

A retry for an order with no recorded payment yet is parked instead (`parked_retries`, written with the batch;
nothing published, nothing dead-lettered, counted in credited_ledger_parked_retries_total), because the two
consumers race: a payment whose provider time is already past the threshold when it arrives (a late callback) is
flagged by the reconciler at once, and its first retry can reach the ledger before the payment does, or long
before it while the payments consumer lags. When the order's PaymentSucceeded arrives it credits the order as
always and clears the parked retries in the same transaction: an early legitimate retry is absorbed by its
payment (the payment's credit is the credit; a parked claim that contradicts the payment is counted and logged,
never credited). A retry whose order still has no payment after LEDGER_RETRY_PARK_S is dead-lettered by the
sweeper (`ledger.parking`) through the outbox with reason `no_payment_fact`, counted as rejected, and forgotten:
a forged retry is still refused and moves nothing, only later. The reconciler retries only orders it saw paid on
the payments topic, the same events the ledger records, so within the park time its retries never draw a dead
letter; until then it sees no answer and retries on its own schedule (each further retry joins the parked one). A
retry for an order already credited only re-announces that credit (nothing moves), so it is answered without the
check.

A block can only win against a payment the ledger has had the chance to credit. The same race decides a
BlockCredit: while the payments consumer lags (the database was away, say), the reconciler's retries park and its
BlockCredit, sent after the last of them on the same partition, would block an order whose payment the ledger is
about to consume; that payment would be refused "blocked" and refunded. So a BlockCredit for an order with no
recorded payment and a parked retry waits with that retry (`domain.block_waits`; nothing published, counted as
block_waits): the order's PaymentSucceeded credits the order as always (the reconciler, hearing the credit
before any final rejection, closes the order credited) and applies the waiting block only if it does not credit;
if no payment comes within the park time, the sweeper applies it with the retry's dead letter. A block for an
order with no parked retry (rejected in risk review, never paid; or retries refused) blocks at once, as before.

A GrantCompensation is not a payment either: it pays only the wallet its order credited (same user, same
currency), at most what the order credited, and never a frozen wallet (`domain.unearned`); anything else is refused
for good (dead-lettered with its reason) and moves nothing. The reconciler's compensation is clipped to the order's
amount, and payments' support API refuses one above it, so a refusal here is a producer's bug or a forged command.

A person can undo a block (issue 18): a RedriveCredit (payments' support API re-drives an order that ended in
needs_support) that matches the recorded payment lifts the order's block and credits it, the block's row deleted in
the transaction that writes the credit. It is obeyed only from ledger.redrives, which only payments' principal may
write (the consumer dead-letters one from any other topic, `wrong_topic`): ledger.commands is the reconciler's too,
and a RetryCredit there that names `requested_by`, as a re-drive was sent before, is refused for good the same
way. Never for a refunded order (block ORDER_REFUNDED): that one is refused for good as before; nor for a block a
refund follows (a risk review's rejection, a person's refund: `contracts.commands.REFUND_BLOCKS`), which stays and
refuses the re-drive "blocked: ...", even when it reached an order already blocked for a reason a re-drive lifts: it
takes that reason's place (`domain.standing_block`; the sweeper applies a waiting block the same way). The ledger
cannot see a refund that is issued but not yet settled; payments' support API refuses a re-drive while one is in
flight, and a RefundSucceeded for a credited order is logged as an error.
"""

import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from contracts.base import Message
from contracts.codec import Envelope, deterministic_id
from contracts.commands import BlockCredit, GrantCompensation, RedriveCredit, RetryCredit
from contracts.events import CreditPosted, CreditRejected, PaymentSucceeded, RefundSucceeded
from contracts.topics import Topic
from ledger import domain
from ledger.ports import UnitOfWorkFactory
from servicekit.logs import about
from servicekit.rejections import PermanentFailure

log = logging.getLogger(__name__)

NO_PAYMENT_FACT = domain.NO_PAYMENT_FACT
PAYMENTS_CONSUMER = "ledger.payments"
COMMANDS_CONSUMER = "ledger.commands"
WRONG_TOPIC = "wrong_topic"
"""The rejection label of a command that did not come on the topic that carries it (as servicekit's consumer's)."""
REDRIVE_ELSEWHERE = (
    "a person's re-drive is a RedriveCredit on ledger.redrives, which only payments writes; a RetryCredit naming"
    " requested_by is refused"
)


@dataclass(frozen=True, slots=True)
class FaultPolicy:
    """Development only: the share of orders whose credit step is deliberately dropped (ground truth kept)."""

    drop_credit_share: float = 0.0


@dataclass(frozen=True, slots=True)
class UserPolicy:
    """Whether a user the ledger has never seen is registered by their first credit, in its currency."""

    register_on_first_credit: bool = True


class BatchDecisions:
    """Decides a batch's messages in order against a view of the books, keeping the view up to date, and
    collects what is to be written (`changes`) and announced (`outgoing`). Pure: no I/O."""

    def __init__(self, view: domain.BooksView, faults: FaultPolicy, users: UserPolicy, now: datetime) -> None:
        self.view = view
        self.changes = domain.Changes()
        self.outgoing: list[tuple[Topic, Message, str]] = []
        self.counts: list[str] = []
        """What happened to parked retries in this batch: parked, absorbed (by their payment), contradicted."""
        self._faults = faults
        self._users = users
        self._now = now

    def decide(self, message: Message, envelope: Envelope) -> None:
        _DECIDERS[type(message)][1](self, message, envelope)

    def payment_succeeded(self, message: PaymentSucceeded, envelope: Envelope) -> None:
        """A paid order is owed a credit: post it once, however often the payment event arrives. The first
        payment event of an order is recorded as its payment fact, whatever happens to the credit; a later one that
        contradicts it (another user, amount, currency or provider transaction: a producer's bug or a forged record,
        since payments announces an order's payment under one event id) is refused for good, like a retry that does,
        so no credit goes beyond what was paid."""
        claimed = domain.PaymentFact(message.user_id, message.amount, message.currency, message.provider_txn_id)
        recorded = self.view.facts.get(message.order_id)
        if recorded is None:
            self.view.facts[message.order_id] = self.changes.facts[message.order_id] = claimed
        elif (refused := domain.unbacked(recorded, claimed, "the payment event")) is not None:
            log.error(
                "order %s: payment event refused, %s (event %s)",
                message.order_id,
                refused.reason,
                envelope.event_id,
                extra=about(message.order_id, envelope),
            )
            raise PermanentFailure(refused.reason, label=refused.label)
        self._unpark(message.order_id, envelope)
        pending = self.view.pending_blocks.pop(message.order_id, None)
        self.changes.pending_blocks.pop(message.order_id, None)
        if domain.drops_credit(message.order_id, self._faults.drop_credit_share):
            self.changes.dropped.append(message.order_id)
            log.warning(
                "fault injection: dropped the credit of order %s (event %s)",
                message.order_id,
                envelope.event_id,
                extra=about(message.order_id, envelope),
            )
        else:
            outcome = self._credit(message, f"payment-{envelope.event_id}")
            level = logging.DEBUG if outcome == "credited" else logging.INFO
            log.log(
                level,
                "order %s: %s (event %s)",
                message.order_id,
                outcome,
                envelope.event_id,
                extra=about(message.order_id, envelope),
            )
        if pending is not None and self.view.order(message.order_id).credit is None:
            # The ledger has had its chance to credit the payment and did not: the block that waited applies.
            self._block(message.order_id, pending, envelope)

    def retry_credit(self, message: RetryCredit, envelope: Envelope) -> None:
        """The reconciler found the order overdue: credit it now, or re-announce the credit it already has. A retry
        for an order not yet credited must match the order's recorded payment, or it is refused for good. One that
        names `requested_by` is refused for good: a person's re-drive is a RedriveCredit on ledger.redrives."""
        if message.requested_by is not None:
            log.warning(
                "order %s: retry %d naming %s refused, %s (event %s)",
                message.order_id,
                message.attempt,
                message.requested_by,
                REDRIVE_ELSEWHERE,
                envelope.event_id,
                extra=about(message.order_id, envelope),
            )
            raise PermanentFailure(f"{WRONG_TOPIC}: {REDRIVE_ELSEWHERE}", label=WRONG_TOPIC)
        if self.view.order(message.order_id).credit is None:
            claimed = None
            if message.provider_txn_id is not None:
                claimed = domain.PaymentFact(message.user_id, message.amount, message.currency, message.provider_txn_id)
            refused = domain.unbacked(self.view.facts.get(message.order_id), claimed)
            if refused is not None and refused.label == domain.NO_PAYMENT_FACT and claimed is not None:
                self._park(message, envelope, claimed)
                return
            if refused is not None:
                log.warning(
                    "order %s: retry %d refused, %s (event %s)",
                    message.order_id,
                    message.attempt,
                    refused.reason,
                    envelope.event_id,
                    extra=about(message.order_id, envelope),
                )
                raise PermanentFailure(refused.reason, label=refused.label)
        outcome = self._credit(message, f"retry-{message.attempt}")
        log.warning(
            "order %s: retry %d -> %s (event %s)",
            message.order_id,
            message.attempt,
            outcome,
            envelope.event_id,
            extra=about(message.order_id, envelope),
        )

    def redrive_credit(self, message: RedriveCredit, envelope: Envelope) -> None:
        """A person re-drives the order through payments' support API (it came on ledger.redrives, which only
        payments writes): lift the order's block if a person may (`domain.lifts_block`) and credit it, or
        re-announce the credit it has. It must match the order's recorded payment, or it is refused for good; it
        is never parked (a person re-drives an order the ledger has seen paid and blocked)."""
        order = self.view.order(message.order_id)
        if order.credit is None:
            claimed = domain.PaymentFact(message.user_id, message.amount, message.currency, message.provider_txn_id)
            refused = domain.unbacked(self.view.facts.get(message.order_id), claimed)
            if refused is not None:
                log.warning(
                    "order %s: re-drive %d by %s refused, %s (event %s)",
                    message.order_id,
                    message.attempt,
                    message.requested_by,
                    refused.reason,
                    envelope.event_id,
                    extra=about(message.order_id, envelope),
                )
                raise PermanentFailure(refused.reason, label=refused.label)
        # Its own event id per re-drive, whether it lifts a block or not: a rejection tagged by attempt would share
        # the id of the reconciler's answer to its retry of that attempt, and be dropped as its duplicate.
        outcome = (
            self._redrive(message, envelope)
            if domain.lifts_block(order)
            else self._credit(message, f"redrive-{envelope.event_id}")
        )
        log.warning(
            "order %s: re-drive %d by %s -> %s (event %s)",
            message.order_id,
            message.attempt,
            message.requested_by,
            outcome,
            envelope.event_id,
            extra=about(message.order_id, envelope),
        )

    def _redrive(self, message: RedriveCredit, envelope: Envelope) -> str:
        """A person re-drives a blocked order (not refunded, its payment matched): lift the block and credit it,
        the lift written with the credit. What happened."""
        order = self.view.order(message.order_id)
        held = order.blocked
        order.blocked = None
        outcome = self._credit(message, f"redrive-{envelope.event_id}")
        if order.credit is not None:
            self.changes.blocks.pop(message.order_id, None)
            self.changes.unblocks.add(message.order_id)
        elif order.blocked is None:
            # Refused again but not for good (the user is still unknown): the block is restored for the rest of the
            # batch and its lift never written (`unblocks` only with a credit), rather than left lifted.
            # A refund (the reconciler's, or a person's through payments' support API, which sends BlockCredit first)
            # follows this block, so only the block keeps "a refund is only ever issued for an order the ledger has
            # blocked" true; a lifted block would let a later retry or re-announced payment credit an order whose
            # refund is under way. Another re-drive,
            # once the user is registered, lifts it again. (A final refusal, e.g. a frozen wallet, blocks anew.)
            order.blocked = held
        return outcome

    def _park(self, message: RetryCredit, envelope: Envelope, claimed: domain.PaymentFact) -> None:
        """Keep a retry whose order has no recorded payment yet until the payment arrives or the park time ends."""
        self.view.parked.setdefault(message.order_id, claimed)
        self.changes.parked.append(domain.ParkedRetry(claimed, message, envelope))
        self.counts.append("parked")
        log.warning(
            "order %s: retry %d parked, no PaymentSucceeded recorded yet (event %s)",
            message.order_id,
            message.attempt,
            envelope.event_id,
            extra=about(message.order_id, envelope),
        )

    def _unpark(self, order_id: str, envelope: Envelope) -> None:
        """The order's payment is recorded: its parked retries are answered by it and go."""
        claimed = self.view.parked.pop(order_id, None)
        if claimed is None:
            return
        self.changes.unparked.append(order_id)
        contradicted = domain.unbacked(self.view.facts[order_id], claimed)
        if contradicted is None:
            self.counts.append("absorbed")
            log.info(
                "order %s: its parked retry is answered by its payment (event %s)",
                order_id,
                envelope.event_id,
                extra=about(order_id, envelope),
            )
            return
        self.counts.append("contradicted")
        log.error(
            "order %s: its parked retry contradicts its payment, not credited: %s (event %s)",
            order_id,
            contradicted.reason,
            envelope.event_id,
            extra=about(order_id, envelope),
        )

    def block_credit(self, message: BlockCredit, envelope: Envelope) -> None:
        """Before a refund: make sure the order is never credited, or say that it already was; wait for the order's
        payment instead if the reconciler saw one the ledger has not yet recorded (`domain.block_waits`)."""
        order = self.view.order(message.order_id)
        if order.credit is not None:
            self._announce(message.order_id, order.credit, "reannounce-block")
            log.warning(
                "order %s was credited already; block refused (event %s)",
                message.order_id,
                envelope.event_id,
                extra=about(message.order_id, envelope),
            )
            return
        oid = message.order_id
        waiting = self.view.pending_blocks.get(oid)
        reason = domain.standing_block(None if waiting is None else waiting.reason, message.reason)
        pending = domain.PendingBlock(message.user_id, reason)
        if domain.block_waits(order, self.view.facts.get(oid), self.view.parked.get(oid)):
            self.view.pending_blocks[oid] = self.changes.pending_blocks[oid] = pending
            self.counts.append("block_waits")
            log.warning(
                "order %s: block waits for the order's payment, a retry of it is parked (event %s)",
                oid,
                envelope.event_id,
                extra=about(oid, envelope),
            )
            return
        self._block(oid, pending, envelope)

    def _block(self, order_id: str, block: domain.PendingBlock, envelope: Envelope) -> None:
        """Block an order not credited (keeping an earlier block's reason unless this one says a refund follows and
        that one does not: `domain.standing_block`) and answer with a final rejection."""
        order = self.view.order(order_id)
        reason = domain.standing_block(order.blocked, block.reason)
        if reason != order.blocked:
            order.blocked = self.changes.blocks[order_id] = reason
        self._reject(order_id, block.user_id, f"blocked: {block.reason}", True, "block")
        log.warning(
            "order %s blocked from crediting: %s (event %s)",
            order_id,
            block.reason,
            envelope.event_id,
            extra=about(order_id, envelope),
        )

    def grant_compensation(self, message: GrantCompensation, envelope: Envelope) -> None:
        """A late credit earns a delay compensation, once per order; an order never credited earns none. Raises
        PermanentFailure for one the order's credit does not stand behind (`domain.unearned`): it is dead-lettered
        with its reason and pays nothing."""
        order = self.view.order(message.order_id)
        if order.credit is None:
            log.warning(
                "order %s has no credit: no compensation (event %s)",
                message.order_id,
                envelope.event_id,
                extra=about(message.order_id, envelope),
            )
            return
        granted = not order.compensated
        if granted:
            frozen = domain.wallet(message.user_id, message.currency).account_id in self.view.frozen
            refused = domain.unearned(order.credit, message.user_id, message.amount, message.currency, frozen)
            if refused is not None:
                log.warning(
                    "order %s: compensation of %d %s to %s refused, %s (event %s)",
                    message.order_id,
                    message.amount,
                    message.currency,
                    message.user_id,
                    refused.reason,
                    envelope.event_id,
                    extra=about(message.order_id, envelope),
                )
                raise PermanentFailure(refused.reason, label=refused.label)
            posting = domain.compensation(message.order_id, message.user_id, message.amount, message.currency)
            self.changes.postings.append((posting, self._now))
            order.compensated = True
        outcome = "granted" if granted else "already granted"
        log.info(
            "order %s compensation %s (event %s)",
            message.order_id,
            outcome,
            envelope.event_id,
            extra=about(message.order_id, envelope),
        )

    def refund_succeeded(self, message: RefundSucceeded, envelope: Envelope) -> None:
        """The order's payment went back to the user: it is never credited, and a late credit says why."""
        order = self.view.order(message.order_id)
        if order.credit is not None:
            # The reconciler refunds only orders the ledger blocked; this needs a person.
            log.error(
                "order %s was refunded although it is credited (event %s)",
                message.order_id,
                envelope.event_id,
                extra=about(message.order_id, envelope),
            )
            return
        if order.blocked != domain.ORDER_REFUNDED:
            order.blocked = self.changes.blocks[message.order_id] = domain.ORDER_REFUNDED
        log.info(
            "order %s refunded: it will never be credited (event %s)",
            message.order_id,
            envelope.event_id,
            extra=about(message.order_id, envelope),
        )

    def _credit(self, message: PaymentSucceeded | RetryCredit | RedriveCredit, tag: str) -> str:
        """Credit once; what happened."""
        order = self.view.order(message.order_id)
        if order.credit is not None:
            if type(message) is not PaymentSucceeded:  # re-announce so the reconciler can close the order
                self._announce(message.order_id, order.credit, f"reannounce-{tag}")
            return "already_credited"
        currency = self.view.users.get(message.user_id)
        if currency is None and order.blocked is None and self._users.register_on_first_credit:
            currency = self.view.users[message.user_id] = message.currency
            self.changes.registrations[message.user_id] = currency
        frozen = domain.wallet(message.user_id, message.currency).account_id in self.view.frozen
        refused = domain.refusal(domain.CreditContext(None, order.blocked, currency, frozen), message.currency)
        if refused is not None:
            if refused.final and order.blocked is None:
                order.blocked = self.changes.blocks[message.order_id] = refused.reason
            self._reject(message.order_id, message.user_id, refused.reason, refused.final, tag)
            return f"rejected ({refused.reason})"
        posting = domain.credit(message.order_id, message.user_id, message.amount, message.currency)
        self.changes.postings.append((posting, self._now))
        order.credit = domain.Posted(
            posting.transaction_id, message.user_id, message.amount, message.currency, self._now
        )
        self._announce(message.order_id, order.credit, "credit")
        return "credited"

    def _announce(self, order_id: str, posted: domain.Posted, tag: str) -> None:
        self.publish(
            Topic.LEDGER_EVENTS,
            CreditPosted(
                order_id=order_id,
                user_id=posted.user_id,
                amount=posted.amount,
                currency=posted.currency,
                transaction_id=posted.transaction_id,
                credited_at=posted.created_at,
            ),
            event_id=deterministic_id("CreditPosted", order_id, tag),
        )

    def _reject(self, order_id: str, user_id: str, reason: str, final: bool, tag: str) -> None:
        # A block's reason may use all the characters the contract allows on its own: "blocked: " in front of it
        # would not validate, and the batch, with the payment in it, would fail every time it is consumed.
        reason = domain.clip(reason)
        self.publish(
            Topic.LEDGER_EVENTS,
            CreditRejected(order_id=order_id, user_id=user_id, reason=reason, final=final, rejected_at=self._now),
            event_id=deterministic_id("CreditRejected", order_id, tag),
        )

    def publish(self, topic: Topic, message: Message, *, event_id: str) -> None:
        """Announce `message` on `topic` once the batch's changes are written."""
        self.outgoing.append((topic, message, event_id))


Decider = Callable[[BatchDecisions, Any, Envelope], None]

_DECIDERS: dict[type[Message], tuple[str, Decider]] = {
    PaymentSucceeded: (PAYMENTS_CONSUMER, BatchDecisions.payment_succeeded),
    RefundSucceeded: (PAYMENTS_CONSUMER, BatchDecisions.refund_succeeded),
    RetryCredit: (COMMANDS_CONSUMER, BatchDecisions.retry_credit),
    RedriveCredit: (COMMANDS_CONSUMER, BatchDecisions.redrive_credit),
    BlockCredit: (COMMANDS_CONSUMER, BatchDecisions.block_credit),
    GrantCompensation: (COMMANDS_CONSUMER, BatchDecisions.grant_compensation),
}
"""What the ledger handles: each message type with the consumer that records its event ids, and its decision."""


async def lock_orders(order_ids: Collection[str], *, uow: UnitOfWorkFactory) -> None:
    """Lock these orders as `handle_batch` does, in the consumer's transaction: before a poll that failed is handled
    one message at a time in it (servicekit.kafka.only), whose messages then find their orders locked already."""
    async with uow() as tx:
        await tx.lock_orders(order_ids)


async def handle_batch(
    deliveries: Sequence[tuple[Message, Envelope]],
    *,
    uow: UnitOfWorkFactory,
    faults: FaultPolicy = FaultPolicy(),
    users: UserPolicy = UserPolicy(),
    parking: Callable[[str], None] = lambda outcome: None,
) -> None:
    """Apply a consumed batch of payment events and reconciler commands, in order, each event id at most once
    (a redelivery, in the batch or of an event applied before, has no effect); other message types are skipped.
    Raises PermanentFailure for a retry that contradicts its order's recorded payment or names none (the consumer
    dead-letters it); parks one whose order has no recorded payment yet. `parking` is told, once the batch is
    committed, each parked retry's outcome (parked, absorbed, contradicted)."""
    mine = [(m, e) for m, e in deliveries if type(m) in _DECIDERS]
    if not mine:
        return
    # Exact types (contract models are final): isinstance on pydantic's metaclass costs per message.
    credits = [m for m, _ in mine if type(m) is PaymentSucceeded or type(m) is RetryCredit or type(m) is RedriveCredit]
    paying = [*credits, *(m for m, _ in mine if type(m) is GrantCompensation)]
    async with uow() as tx:
        await tx.lock_orders({m.order_id for m, _ in mine})
        events = list(dict.fromkeys((_DECIDERS[type(m)][0], e.event_id) for m, e in mine))
        first = await tx.mark_processed_many(events)
        view = await tx.books_of(
            orders={m.order_id for m, _ in mine},
            users={m.user_id for m in credits},
            wallets={domain.wallet(m.user_id, m.currency).account_id for m in paying},
        )
        decisions = BatchDecisions(view, faults, users, datetime.now(UTC))
        for message, envelope in mine:
            key = (_DECIDERS[type(message)][0], envelope.event_id)
            if key not in first:
                log.info(
                    "event %s for order %s already applied",
                    envelope.event_id,
                    message.order_id,
                    extra=about(message.order_id, envelope),
                )
                continue
            first.discard(key)  # a second copy later in the batch is a redelivery too
            decisions.decide(message, envelope)
        await tx.apply(decisions.changes)
        for topic, outgoing, event_id in decisions.outgoing:
            tx.publish(topic, outgoing, event_id=event_id)
        if decisions.counts:
            counts = decisions.counts

            def count() -> None:
                for outcome in counts:
                    parking(outcome)

            tx.after_commit(count)
