"""A record as large as the broker takes, which the reconciler cannot decode, goes to the dead-letter topic trimmed
(its value dropped, the letter's size noted), as the other services' letters are: with the dead-letter headers added
it no longer fits a produce request, and the worker (a real process on the session's broker) goes on with the records
after it. Every round holding it used to be refused and undone, and its partition stood still."""

from pathlib import Path

from contracts.codec import Record
from tests.conftest import Broker
from tests.reconciler.integration.test_a_record_past_the_calendar import lettered_before_the_next_order

ALMOST_A_MEBIBYTE = 1_000_000


async def test_an_undecodable_record_too_large_to_letter_whole_is_lettered_trimmed_and_the_next_order_is_credited(
    broker: Broker, database_url: str, isolation: str, tmp_path: Path
) -> None:
    huge = Record(f"ord_{isolation}_bad".encode(), b"{" + b"x" * ALMOST_A_MEBIBYTE, [])
    letter = await lettered_before_the_next_order(broker, database_url, isolation, tmp_path, huge)
    headers = dict(letter.headers)
    assert headers["dlq_reason"].startswith(b"undecodable")
    assert letter.value == b""
    assert int(headers["dlq_truncated"]) > len(huge.value)
