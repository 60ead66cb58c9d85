"""ChangelogAcks: the wait the consumer makes before committing an offset."""

import asyncio

import pytest
from faust.exceptions import ProducerSendError

from reconciler.adapters.commits import ChangelogAcks


async def test_a_commit_waits_until_every_record_sent_before_it_is_acknowledged() -> None:
    acks = ChangelogAcks()
    loop = asyncio.get_running_loop()
    first, second = loop.create_future(), loop.create_future()
    acks.track(first)
    acks.track(second)
    waiting = asyncio.create_task(acks.acknowledged())
    first.set_result("acknowledged")
    await asyncio.sleep(0)
    assert not waiting.done()
    second.set_result("acknowledged")
    await asyncio.wait_for(waiting, timeout=5)
    assert acks.pending == 0


async def test_records_sent_after_the_commit_began_do_not_hold_it_up() -> None:
    acks = ChangelogAcks()
    loop = asyncio.get_running_loop()
    earlier = loop.create_future()
    acks.track(earlier)
    waiting = asyncio.create_task(acks.acknowledged())
    await asyncio.sleep(0)
    acks.track(loop.create_future())
    earlier.set_result("acknowledged")
    await asyncio.wait_for(waiting, timeout=5)
    assert acks.pending == 1


async def test_a_refused_record_fails_that_commit_and_every_later_one() -> None:
    acks = ChangelogAcks()
    loop = asyncio.get_running_loop()
    refused = loop.create_future()
    acks.track(refused)
    refused.set_exception(ConnectionError("broker went away"))
    for _ in range(2):
        with pytest.raises(ProducerSendError, match="refused"):
            await acks.acknowledged()
    assert acks.pending == 0


async def test_a_record_never_acknowledged_fails_the_commit_after_the_timeout() -> None:
    acks = ChangelogAcks(timeout_s=0.05)
    acks.track(asyncio.get_running_loop().create_future())
    with pytest.raises(ProducerSendError, match="unacknowledged"):
        await acks.acknowledged()


async def test_a_record_already_acknowledged_when_tracked_is_not_waited_for() -> None:
    acks = ChangelogAcks()
    done = asyncio.get_running_loop().create_future()
    done.set_result("acknowledged")
    acks.track(done)
    assert acks.pending == 0
    await asyncio.wait_for(acks.acknowledged(), timeout=5)
