"""What a user whose locale we do not write exactly reads: the language and numbers of the sentence agree."""

from datetime import UTC, datetime

import pytest

from contracts.events import OrderStatus, OrderStatusChanged
from notifier import domain
from tests.notifier.unit.test_messages import change

ETA = datetime(2026, 11, 22, 8, 5, tzinfo=UTC)


def delayed() -> OrderStatusChanged:
    return change(OrderStatus.DELAYED, ETA)


@pytest.mark.parametrize("asked", ["ja-JP", "fr", "ar-EG", "de-DE"])
def test_a_language_we_do_not_write_gets_the_english_message_with_english_money_and_dates(asked: str) -> None:
    english = domain.render(delayed(), "en", "Asia/Tokyo").body
    assert "CN¥648.00" in english and "Nov 22, 2026" in english
    assert domain.render(delayed(), asked, "Asia/Tokyo").body == english


@pytest.mark.parametrize(
    ("asked", "got"),
    [
        ("zh-Hant-US", "zh-TW"),
        ("zh-Hant-CA", "zh-TW"),
        ("zh-Hant-SG", "zh-TW"),
        ("zh-Hans-US", "zh-CN"),
        ("zh-Hans-HK", "zh-CN"),
        ("zh-TW-u-nu-hanidec", "zh-TW"),
        ("zh-HK-u-ca-chinese", "zh-HK"),
    ],
)
def test_a_chinese_script_or_region_asked_for_is_kept_when_the_whole_tag_is_unknown(asked: str, got: str) -> None:
    assert domain.resolve_locale(asked) == got
    assert domain.render(delayed(), asked).locale == got
