"""A user who chose a locale and a time zone reads their notification and status page in both."""

from datetime import timedelta

from contracts.events import OrderStatus
from tests.conftest import Broker
from tests.kafka_reader import eventually
from tests.notifier.conftest import StartNotifier
from tests.notifier.harness import T0, change, publish


async def test_a_delay_is_told_in_traditional_chinese_with_the_time_in_the_users_zone(
    notifier: StartNotifier, broker: Broker, isolation: str
) -> None:
    running = await notifier()
    chosen = {"locale": "zh-TW", "time_zone": "Asia/Taipei"}
    assert (await running.api.put(f"{running.url}/v1/users/u-tw/locale", json=chosen)).is_success
    delayed = change("ord_tw", OrderStatus.DELAYED, 2, user_id="u-tw", eta=T0 + timedelta(minutes=5))
    await publish(broker, f"{isolation}.", delayed)
    await running.wait_until_consumed("ord_tw", 1)

    async def inbox() -> list[dict[str, str]]:
        notifications: list[dict[str, str]] = (await running.api.get(f"{running.url}/v1/inbox/u-tw")).json()[
            "notifications"
        ]
        return notifications

    await eventually(inbox)
    (told,) = await inbox()
    assert (told["locale"], told["title"]) == ("zh-TW", "儲值入帳延遲")
    assert "預計於2026年11月22日 下午4:05前入帳。" in told["body"]  # 08:05 UTC is 16:05 in Taipei
    page = (await running.api.get(f"{running.url}/v1/orders/ord_tw/timeline")).json()
    assert page["locale"] == "zh-TW"
    assert page["steps"][-2]["detail"] == "預計於2026年11月22日 下午4:05前入帳"
