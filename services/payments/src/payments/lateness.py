"""How late the providers' paid callbacks are arriving now: what the query worker waits out before it asks.

A query is for an order whose callback is lost, not merely late. When the stack or a provider's notifier falls
behind, every callback arrives seconds after its payment; a worker that asked about every order past its
first query's time would then ask about most of them, and those asks (signed requests both ways, an answer
applied in a transaction) slow the stack further: measured on the 20,000-order demo, 4,482 orders went overdue
with nothing dropped. So payments keeps the lateness of the paid callbacks of the last few seconds (arrival
minus the paid_at the provider states) and the worker takes a query only once its due time is that much
behind: the stack's own delay is waited out, and no more than one query delay (a provider that delivers its
callbacks minutes late must not hold back the queries that find its lost ones). Pure: the time is passed in.
"""

from collections import deque

WINDOW_S = 10.0
"""The callbacks of this many seconds make the figure."""

KEPT = 2048
"""At most this many of the latest callbacks are kept (at a peak the window holds more: the latest stand for it)."""

QUANTILE = 0.9
"""The share of recent paid callbacks that arrived at least this soon."""


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

    def observe(self, arrived_at: float, paid_at: float) -> None:
        """A paid callback arrived at `arrived_at` for a payment its provider states was made at `paid_at` (unix
        seconds); a paid_at ahead of the arrival counts as on time."""
        self._seen.append((arrived_at, max(0.0, arrived_at - paid_at)))

    def seconds(self, now: float) -> float:
        """The lateness that `quantile` of the paid callbacks of the last `window_s` seconds stayed within."""
        while self._seen and self._seen[0][0] < now - self._window_s:
            self._seen.popleft()
        if not self._seen:
            return 0.0
        late = sorted(lateness for _, lateness in self._seen)
        return late[min(len(late) - 1, int(self._quantile * len(late)))]
