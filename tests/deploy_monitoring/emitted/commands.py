"""Commands no payment stands behind, judged by the services' real rules and counted by their real metrics.

The ledger's RetryCredit goes through `ledger.domain.unbacked` (parked while the payment may still come, as its
handler does, then dead-lettered `no_payment_fact` when the park time runs out, as its sweeper does), its
GrantCompensation through `ledger.domain.unearned`; payments' IssueRefund goes through `payments.refunds.refusal`.
A person's re-drive that did not come on ledger.redrives is refused `wrong_topic`: a RedriveCredit on another topic
by servicekit's consumer (by the contracts catalogue, as `servicekit.infrastructure.carried_by` tells it), a
RetryCredit naming `requested_by` by the ledger's own handler (`ledger.handlers.BatchDecisions`).
Each refusal is dead-lettered as rejected by the consumer group that read the command, under the label the rule
gave it. Only the databases and Kafka are left out.
"""

from datetime import UTC, datetime

from contracts.codec import envelope_for
from contracts.commands import IssueRefund, RedriveCredit, RetryCredit
from contracts.topics import Topic
from ledger import domain as ledger_domain
from ledger.adapters.metrics import ParkingMetrics
from ledger.handlers import BatchDecisions, FaultPolicy, UserPolicy
from payments.domain import Order, PaymentStatus
from payments.refunds import refusal
from servicekit.consumer import WRONG_TOPIC
from servicekit.infrastructure import carried_by
from servicekit.metrics import ConsumerMetrics, DeadLetterKind
from servicekit.rejections import PermanentFailure

PAID = ledger_domain.PaymentFact("u-1", 600, "CNY", "txn-1")
CREDITED_AT = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


class Commands:
    """The ledger's command consumer and parking, and payments' command consumer, of one stack."""

    def __init__(self, ledger: ConsumerMetrics, parking: ParkingMetrics, payments: ConsumerMetrics) -> None:
        self._ledger = ledger
        self._parking = parking
        self._payments = payments
        self._parked: set[str] = set()

    def retry_credit(self, order_id: str, claimed: ledger_domain.PaymentFact | None, *, paid: bool) -> None:
        """A RetryCredit claiming `claimed` for an order the ledger holds `PAID` for (when `paid`) or no payment."""
        refused = ledger_domain.unbacked(PAID if paid else None, claimed)
        if refused is not None and refused.label == ledger_domain.NO_PAYMENT_FACT and claimed is not None:
            self._parking.count("parked")
            self._parked.add(order_id)
        elif refused is not None:
            self._ledger.dead_lettered(DeadLetterKind.REJECTED, refused.label)

    def redrive_on(self, topic: Topic) -> None:
        """A RedriveCredit the ledger's ledger.commands group reads from `topic`: its consumer refuses it undecoded,
        `wrong_topic`, unless the catalogue says `topic` carries it (ledger.redrives, which only payments writes)."""
        if RedriveCredit.event_type not in carried_by([topic], "")[topic.value]:
            self._ledger.dead_lettered(DeadLetterKind.REJECTED, WRONG_TOPIC)

    def retry_naming_a_person(self, order_id: str, requested_by: str) -> None:
        """A RetryCredit on ledger.commands that names `requested_by`, matching the order's payment `PAID`: a person's
        re-drive sent the old way, which the ledger's handler refuses for good."""
        command = RetryCredit(
            order_id=order_id,
            user_id=PAID.user_id,
            amount=PAID.amount,
            currency=PAID.currency,
            attempt=1,
            requested_at=CREDITED_AT,
            provider_txn_id=PAID.provider_txn_id,
            requested_by=requested_by,
        )
        books = ledger_domain.BooksView(facts={order_id: PAID})
        decisions = BatchDecisions(books, FaultPolicy(), UserPolicy(), CREDITED_AT)
        try:
            decisions.decide(command, envelope_for(command, producer="reconciler", occurred_at=CREDITED_AT))
        except PermanentFailure as refused:
            self._ledger.dead_lettered(DeadLetterKind.REJECTED, refused.label)

    def compensation(self, order_id: str, user_id: str, amount: int, currency: str = "CNY") -> None:
        """A GrantCompensation for an order the ledger credited `PAID` (not compensated yet, wallet not frozen)."""
        credited = ledger_domain.Posted(f"tx-{order_id}", PAID.user_id, PAID.amount, PAID.currency, CREDITED_AT)
        refused = ledger_domain.unearned(credited, user_id, amount, currency, frozen=False)
        if refused is not None:
            self._ledger.dead_lettered(DeadLetterKind.REJECTED, refused.label)

    def payment_arrives(self, order_id: str) -> None:
        """The order's PaymentSucceeded reaches the ledger within the park time and answers its parked retry."""
        if order_id in self._parked:
            self._parking.count("absorbed")
            self._parked.discard(order_id)

    def park_time_passes(self) -> None:
        """Every parked retry's order is still unpaid after the park time: each is dead-lettered no_payment_fact
        (the ledger's bootstrap counts the sweeper's expiries so)."""
        self._parking.count("expired", len(self._parked))
        for _ in self._parked:
            self._ledger.dead_lettered(DeadLetterKind.REJECTED, ledger_domain.NO_PAYMENT_FACT)
        self._parked.clear()

    def refund(
        self, order_id: str, amount: int, now: datetime, *, status: PaymentStatus | None, lifecycle: str = "paid"
    ) -> None:
        """An IssueRefund of `amount` for an order payments holds with payment `status` (None: not at all), paid 600,
        and `lifecycle` its status as the user sees it (credited, ...)."""
        order = None
        if status is not None:
            paid = status is PaymentStatus.SUCCEEDED
            provider, txn = ("sim", "txn-1") if paid else (None, None)
            order = Order(
                order_id, "u-1", 600, "CNY", "card", status, lifecycle, now, provider=provider, provider_txn_id=txn
            )
        command = IssueRefund(
            order_id=order_id, user_id="u-1", amount=amount, currency="CNY", reason="refund", requested_at=now
        )
        refused = refusal(command, order)
        if refused is not None:
            self._payments.dead_lettered(DeadLetterKind.REJECTED, refused.label)
