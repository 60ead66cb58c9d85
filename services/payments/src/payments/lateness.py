"""How late the providers' paid callbacks are arriving now: what the query worker waits out before it asks.

A query is for an order whose callback is lost, not merely late. When callbacks lag (a provider's notifier
behind, as the local provider's was by up to 14 s at the 20,000-order demo's peak, or payments itself behind),
a worker that asked as soon as each first query fell due would ask about nearly every order, each ask a signed
request and a signed answer, and apply payments their callbacks were about to bring. So payments keeps the
lateness of the paid callbacks of the last few seconds (arrival minus the paid_at the provider states, or minus
the order's placing when that is later: paid_at is in whole seconds) and the worker takes a query only once its
due time is that much behind. It waits no more than one query delay: a provider that delivers its callbacks
minutes late must not hold back the queries that find its lost ones. Pure: the time is passed in.
"""

from collections import deque

WINDOW_S = 10.0
"""The callbacks of this many seconds make the figure."""

KEPT = 2048
"""At most this many of the latest callbacks are kept (at a peak the window holds more: the latest stand for it)."""

QUANTILE = 0.75
"""The share of recent paid callbacks that arrived at least this soon. In the 20,000-order demo at three in four,
two runs flagged none of 534 and 481 lost notifications after their deadline and asked about 113 and 108 orders
merely late; at nine in ten, three runs flagged 1, 2 and 0 and asked about 8, 123 and 61 (a wait of about a
second more or less at that peak: the deadline runs from whole seconds, so a second is most of the margin)."""


class CallbackLateness:
    """The lateness of recently arrived paid callbacks, in seconds; 0 when none arrived in the window."""

    def __init__(self, *, window_s: float = WINDOW_S, kept: int = KEPT, quantile: float = QUANTILE) -> None:
        if window_s <= 0 or kept < 1 or not 0 < quantile <= 1:
            raise ValueError(
                "callback lateness needs a positive window, room for one callback and a quantile in (0, 1]"
            )
        self._window_s = window_s
        self._quantile = quantile
        self._seen: deque[tuple[float, float]] = deque(maxlen=kept)

    def observe(self, arrived_at: float, paid_at: float, placed_at: float | None = None) -> None:
        """A paid callback arrived at `arrived_at` for a payment its provider states was made at `paid_at`, for
        an order placed at `placed_at` (unix seconds). The payment came no sooner than its order: the providers
        state paid_at in whole seconds, so for an order paid within the second it was placed the placing is
        the nearer bound. A paid_at ahead of the arrival counts as on time."""
        made_at = paid_at if placed_at is None else max(paid_at, placed_at)
        self._seen.append((arrived_at, max(0.0, arrived_at - made_at)))

    def seconds(self, now: float) -> float:
        """The lateness that `quantile` of the paid callbacks of the last `window_s` seconds stayed within."""
        while self._seen and self._seen[0][0] < now - self._window_s:
            self._seen.popleft()
        if not self._seen:
            return 0.0
        late = sorted(lateness for _, lateness in self._seen)
        return late[min(len(late) - 1, int(self._quantile * len(late)))]
