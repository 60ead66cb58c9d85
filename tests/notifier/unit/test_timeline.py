from datetime import UTC, datetime, timedelta

from contracts.events import OrderStatus, OrderStatusChanged
from notifier import domain
from notifier.domain import StepState

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


def change(status: OrderStatus, sequence: int, eta: datetime | None = None) -> OrderStatusChanged:
    return OrderStatusChanged(
        order_id="ord_42",
        user_id="u1",
        status=status,
        sequence=sequence,
        amount=64800,
        currency="CNY",
        channel="alipay",
        paid_at=T0,
        changed_at=T0 + timedelta(minutes=sequence),
        estimated_credit_at=eta,
    )


def keys(timeline: domain.Timeline) -> list[tuple[str, str]]:
    return [(s.key, s.state.value) for s in timeline.steps]


def test_an_order_without_news_shows_the_happy_path_still_to_come() -> None:
    t = domain.timeline("ord_42", [], "en")
    assert keys(t) == [("submitted", "done"), ("paid", "upcoming"), ("crediting", "upcoming"), ("credited", "upcoming")]
    assert not t.final and t.sequence == 0


def test_a_delayed_order_shows_the_delay_and_crediting_in_progress_with_the_estimate() -> None:
    eta = T0 + timedelta(minutes=10)
    t = domain.timeline("ord_42", [change(OrderStatus.DELAYED, 2, eta)], "en")
    assert keys(t) == [
        ("submitted", "done"),
        ("paid", "done"),
        ("delayed", "done"),
        ("crediting", "current"),
        ("credited", "upcoming"),
    ]
    assert t.steps[2].tone == "warn"
    assert t.steps[3].detail == "Expected by Nov 22, 2026, 8:10\u202fAM UTC"
    assert t.headline == "Your top-up is delayed" and "CN¥648.00" in t.message and t.amount == "CN¥648.00"
    taipei = domain.timeline("ord_42", [change(OrderStatus.DELAYED, 2, eta)], "zh-TW", "Asia/Taipei")
    assert taipei.steps[3].detail == "預計於2026年11月22日 下午4:10前入帳"


def test_a_credited_order_is_final_and_its_changes_are_in_sequence_order_whatever_order_they_came_in() -> None:
    changes = [change(OrderStatus.CREDITED, 4), change(OrderStatus.DELAYED, 2), change(OrderStatus.REMEDIATING, 3)]
    t = domain.timeline("ord_42", changes, "zh-CN")
    assert [k for k, _ in keys(t)] == ["submitted", "paid", "delayed", "remediating", "crediting", "credited"]
    assert all(s.state is StepState.DONE for s in t.steps)
    assert t.final and t.sequence == 4
    assert t.headline == "充值已到账" and t.steps[-1].label == "已到账"


def test_a_refunded_order_ends_with_the_refund_and_no_crediting_step() -> None:
    t = domain.timeline("ord_42", [change(OrderStatus.DELAYED, 2), change(OrderStatus.REFUNDED, 3)], "en")
    assert [k for k, _ in keys(t)] == ["submitted", "paid", "delayed", "refunded"]
    assert t.final


def test_the_page_speaks_the_users_language_with_fallback() -> None:
    assert domain.page_text("zh-CN")["live"] == "实时"
    assert domain.page_text("zh-TW")["live"] == "即時"
    assert domain.page_text("zh-HK")["reconnecting"] == "正在重新連接…"
    assert domain.page_text("fr")["live"] == "Live"


def test_the_push_topic_is_a_stable_32_character_url_safe_collapse_key_per_order() -> None:
    topic = domain.push_topic("ord_42")
    assert len(topic) == 32 and topic == domain.push_topic("ord_42") != domain.push_topic("ord_43")
    assert set(topic) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_what_the_user_waits_for_is_urgent_and_the_rest_is_normal() -> None:
    assert domain.urgency_for(OrderStatus.CREDITED) is domain.Urgency.HIGH
    assert domain.urgency_for(OrderStatus.DELAYED) is domain.Urgency.NORMAL


def step_times(timeline: domain.Timeline) -> list[str]:
    return [s.at_text for s in timeline.steps if s.at_text]


def test_without_a_chosen_zone_every_time_is_in_the_browsers_zone_and_names_its_offset() -> None:
    delayed = [change(OrderStatus.DELAYED, 2, T0 + timedelta(minutes=10))]
    t = domain.timeline("ord_42", delayed, "en", browser_zone="Asia/Shanghai")
    assert step_times(t) == ["Nov 22, 2026, 4:00\u202fPM UTC+8", "Nov 22, 2026, 4:02\u202fPM UTC+8"]
    assert "Nov 22, 2026, 4:10\u202fPM UTC+8" in t.message and "4:10\u202fPM UTC+8" in t.steps[-2].detail
    zh = domain.timeline("ord_42", delayed, "zh-CN", browser_zone="Asia/Kolkata")
    assert step_times(zh)[0] == "2026年11月22日 13:30（UTC+5:30）"  # noqa: RUF001
    assert step_times(domain.timeline("ord_42", delayed, "en", browser_zone="America/St_Johns"))[0].endswith("UTC-3:30")
    assert step_times(domain.timeline("ord_42", delayed, "en", browser_zone="Etc/UTC"))[0].endswith("8:00\u202fAM UTC")


def test_a_chosen_zone_wins_over_the_browsers_and_an_unknown_browser_zone_is_utc() -> None:
    delayed = [change(OrderStatus.DELAYED, 2, T0 + timedelta(minutes=10))]
    chosen = domain.timeline("ord_42", delayed, "en", "Asia/Taipei", browser_zone="America/New_York")
    assert step_times(chosen)[0] == "Nov 22, 2026, 4:00\u202fPM" and "4:10\u202fPM." in chosen.message
    for odd in ("Mars/Olympus", "America", "../../../etc/passwd", ""):
        unknown = domain.timeline("ord_42", delayed, "en", browser_zone=odd)
        assert step_times(unknown)[0] == "Nov 22, 2026, 8:00\u202fAM UTC", odd
