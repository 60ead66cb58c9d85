"""The payment channels with metric series of their own: one list, PAYMENTS_METRIC_CHANNELS, by which payments and
the reconciler both label their per-channel series.

An order's channel is the API caller's to choose (any `[a-z0-9_.-]{1,32}` on POST /v1/orders), so a label taken
from it as it is would let a caller create series at will. Every channel outside the list is counted as `other`,
and the two services' series of one channel mean the same orders.
"""

from collections.abc import Iterable

OTHER_CHANNEL = "other"
METRIC_CHANNELS_ENV = "PAYMENTS_METRIC_CHANNELS"
"""The one setting (a JSON list) every service that labels by channel reads."""
DEFAULT_METRIC_CHANNELS = frozenset({"alipay", "wechat", "card", "carrier"})


class MetricChannels:
    """An order's channel as a metric label: itself if configured, else `other`."""

    def __init__(self, channels: Iterable[str] = DEFAULT_METRIC_CHANNELS) -> None:
        self.channels = frozenset(channels)

    def label(self, channel: str) -> str:
        return channel if channel in self.channels else OTHER_CHANNEL
