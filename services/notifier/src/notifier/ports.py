"""What the notifier needs from the outside world."""

from types import TracebackType
from typing import Any, Protocol

from notifier.domain import Notification


class NotifierUnitOfWork(Protocol):
    async def __aenter__(self) -> "NotifierUnitOfWork": ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def add(self, notification: Notification, payload: dict[str, Any]) -> bool:
        """Queue the notification for delivery; False if this (order, status) was queued before."""
        ...


class UnitOfWorkFactory(Protocol):
    def __call__(self) -> NotifierUnitOfWork: ...


class DeliveryFailed(Exception):
    """A delivery attempt failed; `retry` says whether another attempt can help, `retry_after_s` when."""

    def __init__(self, reason: str, *, retry: bool, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry = retry
        self.retry_after_s = retry_after_s


class DeliveryChannel(Protocol):
    """A way to reach the user or the platform: webhook, Web Push, FCM."""

    name: str

    async def deliver(self, payload: dict[str, Any]) -> None:
        """Deliver or raise DeliveryFailed."""
        ...
