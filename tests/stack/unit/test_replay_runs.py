"""A replay run against the broker's answers: a fence ends it, a lost producer starts it over (deadletters.py)."""

import pytest
from aiokafka.errors import InvalidTxnState, KafkaError, NodeNotReadyError, ProducerFenced

from credited.deadletters import (
    DeadLetter,
    Outcome,
    Replay,
    ReplayInterrupted,
    again_unless_fenced,
    fenced,
    with_earlier_attempts,
)

LETTER = DeadLetter("credited.deadletter", 0, 7, b"ord_1", b"{}", (("dlq_source_topic", b"payments.events"),), 0)


def wrapped(cause: Exception) -> KafkaError:
    """What aiokafka raises when its sender task dies: the broker's answer as the cause."""
    try:
        raise KafkaError("Unexpected error during batch delivery") from cause
    except KafkaError as exc:
        return exc


def test_a_fence_is_recognised_whether_aiokafka_names_it_or_wraps_the_brokers_answer() -> None:
    assert fenced(ProducerFenced())
    assert fenced(wrapped(InvalidTxnState()))
    assert not fenced(wrapped(NodeNotReadyError()))
    assert not fenced(ValueError("not from Kafka"))


class Runs:
    """A replay run's attempts: each raises the next of `failures`, and once they are used up it replays LETTER."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.calls = 0

    async def __call__(self) -> Outcome:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return Outcome(replayed=[LETTER])


async def test_a_run_fenced_behind_a_wrapped_error_stops_at_once_saying_what_it_had_replayed() -> None:
    run = Runs(wrapped(InvalidTxnState()))
    with pytest.raises(ReplayInterrupted, match="had replayed 1"):
        await again_unless_fenced(run, [LETTER])
    assert run.calls == 1


async def test_a_run_that_lost_its_producer_to_the_broker_starts_over_and_returns_the_next_ones_outcome() -> None:
    run = Runs(wrapped(NodeNotReadyError()))
    assert (await again_unless_fenced(run, [])).replayed == [LETTER]
    assert run.calls == 2


async def test_a_run_that_keeps_losing_its_producer_gives_up_with_the_brokers_error() -> None:
    run = Runs(*(wrapped(NodeNotReadyError()) for _ in range(5)))
    with pytest.raises(KafkaError, match="Unexpected error during batch delivery"):
        await again_unless_fenced(run, [])
    assert run.calls == 3


def test_what_an_earlier_producer_of_the_run_committed_is_reported_as_replayed_by_the_run_not_before_it() -> None:
    other = DeadLetter("credited.deadletter", 0, 8, b"ord_2", b"{}", (("dlq_source_topic", b"payments.events"),), 0)
    theirs = DeadLetter("credited.deadletter", 0, 9, b"ord_3", b"{}", (("dlq_source_topic", b"payments.events"),), 0)
    by = Replay(LETTER.coordinates, "payments.events", None, "on-call", "2026-12-05T20:00:00+00:00")
    earlier = Replay(theirs.coordinates, "payments.events", None, "someone", "2026-12-04T20:00:00+00:00")
    last = Outcome(replayed=[other], already=[(LETTER, by), (theirs, earlier)])

    merged = with_earlier_attempts(last, [LETTER])

    assert merged.replayed == [LETTER, other]
    assert merged.already == [(theirs, earlier)]
