"""The order-state table keeps OrderState objects and writes them to its changelog with its own codec, so a
state restored from the changelog is an OrderState again, equal to the one written."""

from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.adapters.table import CODEC, OrderTable
from reconciler.bootstrap import build
from reconciler.config import Settings
from reconciler.domain import OrderState, Phase


def test_a_state_written_to_the_changelog_is_restored_as_the_same_order_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECONCILER_DATA_DIR", str(tmp_path))
    app = build(Settings())
    table = next(t for t in app.tables.values() if isinstance(t, OrderTable))
    topic = table.changelog_topic
    assert table.value_serializer == CODEC and topic.value_serializer == CODEC
    now = datetime.now(UTC)
    state = OrderState("o1", 3, "u1", 600, "CNY", "card", None, Phase.CREDITED, now, now, settled_at=now)
    state.history = (("paid", now), ("credited", now))
    written = app.serializers.dumps_value(topic.value_type, state, serializer=table.value_serializer)
    restored = app.serializers.loads_value(topic.value_type, written, serializer=topic.value_serializer)
    assert isinstance(restored, OrderState) and restored == state


def test_the_worker_that_has_an_order_is_the_one_fausts_router_sends_its_timeline_request_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECONCILER_DATA_DIR", str(tmp_path))
    app = build(Settings())
    table = next(t for t in app.tables.values() if isinstance(t, OrderTable))
    for order_id in ("ord_1", "ord_00000042", "x:y-z.9"):
        key = app.router._get_serialized_key(table, order_id)
        assert key == order_id.encode()
        routed = app.producer.partitioner(key, list(range(6)), list(range(6)))
        assert routed == table.partition_for_key(order_id)
        assert app.serializers.loads_key(None, key, serializer=table.changelog_topic.key_serializer) == order_id
    old = app.serializers.loads_key(None, b'"ord_1"', serializer=table.changelog_topic.key_serializer)
    assert old == "ord_1", "a key a worker wrote before reads as the same order"
