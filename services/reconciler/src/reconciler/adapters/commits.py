"""No input offset is committed before the broker holds the table changes it caused.

Why faust alone does not promise it (faust-streaming 0.15, at_least_once): a table write is
`changelog_topic.send_soon()`: the record goes into faust's ProducerBuffer, a queue that a background
task drains into aiokafka. The event is acked when the agent moves on, and the commit task then runs
`producer.flush()` and commits. That flush does not wait for the queue: `ProducerBuffer.flush` gives up
as soon as one record takes longer than 0.1 s to leave the queue (a loaded machine, a full aiokafka
batch, a metadata refresh) and it does not see the record the drain task has taken off the queue but
not yet handed to aiokafka; aiokafka's own flush then waits only for what it already holds. So the
offset of a payment can be committed while its changelog record is still in this process's memory, and
a SIGKILL then loses the record: the owner that restores the table after it misses the payment (the
order later looks credited without a payment and is never announced) or misses a credit (the order is
flagged although its credit was read: a false alarm), and the safe time (watermarks.py) counts the
lost record as applied because it starts a new assignment at the committed offset.

The rule here: every changelog future is tracked from the moment it is created, and before any commit
(the periodic one, on revocation, on stop) the consumer waits until the broker has acknowledged every
record sent so far. The records an event caused are sent before the event is acked (the handler
writes the table before the agent takes the next event), so they are in that set. A record the broker
refuses, or one it has not acknowledged within `ACK_TIMEOUT_S`, crashes the worker instead of
committing; the next owner replays from the last good commit.

Announcements need nothing more: the announcer awaits the broker's acknowledgement of every status
change and command before the handler stores the new state, and so before the event is acked. A kill
before that acknowledgement leaves the event uncommitted (or, for a timer, the state unstored) and the
transition happens again after recovery: the announcement may be repeated, never lost, and a repeat
carries the same deterministic event id and the same status sequence (it is computed from the same
restored state), which the notifier and the ledger and payments drop, and which the flag count in
tests/e2e/status_log.py counts once.
"""

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, ClassVar

import faust
from faust.exceptions import ProducerSendError
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, ConsumerT

log = logging.getLogger(__name__)

ACK_TIMEOUT_S = 60.0


class ChangelogAcks:
    """Changelog records sent and not yet acknowledged by the broker; remembers a refusal for good."""

    def __init__(self, timeout_s: float = ACK_TIMEOUT_S) -> None:
        self._pending: set[asyncio.Future[Any]] = set()
        self._failure: BaseException | None = None
        self._timeout_s = timeout_s

    def track(self, sent: asyncio.Future[Any]) -> None:
        if sent.done():
            self._settled(sent)
        else:
            self._pending.add(sent)
            sent.add_done_callback(self._settled)

    def _settled(self, sent: asyncio.Future[Any]) -> None:
        self._pending.discard(sent)
        if self._failure is None and not sent.cancelled() and sent.exception() is not None:
            self._failure = sent.exception()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def acknowledged(self) -> None:
        """Return once every record sent so far is acknowledged; raise ProducerSendError if one was refused
        (then the changelog has a hole and no later offset may be committed either) or is overdue."""
        waiting = list(self._pending)
        if waiting:
            _, late = await asyncio.wait(waiting, timeout=self._timeout_s)
            if late:
                raise ProducerSendError(f"{len(late)} changelog records unacknowledged after {self._timeout_s:.0f}s")
        if self._failure is not None:
            raise ProducerSendError(f"a changelog record was refused: {self._failure!r}") from self._failure


class AcknowledgedCommitConsumer(faust_aiokafka.Consumer):  # type: ignore[misc]  # faust is untyped here
    """faust's aiokafka consumer, waiting for the changelog before each commit. faust calls
    `_handle_attached` with the offsets about to be committed, right before committing them, and crashes
    the consumer instead of committing when it raises ProducerSendError."""

    async def _handle_attached(self, commit_offsets: Mapping[TP, int]) -> None:
        await super()._handle_attached(commit_offsets)
        acks = self.transport.changelog_acks
        assert isinstance(acks, ChangelogAcks)
        await acks.acknowledged()


class AcknowledgedCommitTransport(faust_aiokafka.Transport):  # type: ignore[misc]
    """The aiokafka transport with AcknowledgedCommitConsumer, sharing one ChangelogAcks with the table."""

    Consumer: ClassVar[type[ConsumerT]] = AcknowledgedCommitConsumer

    def __init__(self, app: faust.App, acks: ChangelogAcks) -> None:
        super().__init__(app.conf.broker_consumer, app)
        self.changelog_acks = acks


def acknowledge_before_commit(app: faust.App, acks: ChangelogAcks) -> None:
    """Give `app` the consumer that waits for `acks` before committing; call before anything uses it."""
    app.transport = AcknowledgedCommitTransport(app, acks)
