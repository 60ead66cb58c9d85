"""What the notifier needs from the outside world."""

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

from notifier.domain import Notification, Preferences

SUPERSEDED = "superseded"
"""The state of a notification older (by its order's sequence) than a status of its order queued before it."""


class NotifierUnitOfWork(Protocol):
    async def __aenter__(self) -> "NotifierUnitOfWork": ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def lock_orders(self, order_ids: Collection[str]) -> None:
        """Queue these orders' notifications one unit of work at a time until this one ends, as `add_many` does for
        its own; the locks are taken in one fixed order, so two units sharing orders wait and never deadlock."""
        ...

    async def preferences_of_many(self, user_ids: Sequence[str]) -> dict[str, Preferences]:
        """The locale and time zone each of these users chose (each None if they did not), for those who chose."""
        ...

    async def add_many(self, notifications: Sequence[tuple[Notification, dict[str, Any]]]) -> dict[str, str]:
        """Queue each notification (with its payload) for delivery to every target its user has now; the state of
        each queued now by its id (the others were queued before): "pending", "inbox_only" (no target), or SUPERSEDED
        (older than a status of its order queued before: recorded, never delivered)."""
        ...


class UnitOfWorkFactory(Protocol):
    def __call__(self) -> NotifierUnitOfWork: ...


@dataclass(frozen=True, slots=True)
class Target:
    """Where one delivery goes: the platform's webhook, or one of the user's devices (a Web Push
    subscription: endpoint URL and keys; an FCM registration token in `endpoint`)."""

    channel: str
    subscription_id: str | None = None
    endpoint: str = ""
    p256dh: str = ""
    auth: str = ""


class DeliveryFailed(Exception):
    """A delivery attempt failed; `retry` says whether another attempt can help, `retry_after_s` when,
    and `gone` that the device's subscription no longer exists (404/410) and must be removed."""

    def __init__(self, reason: str, *, retry: bool, retry_after_s: float | None = None, gone: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry = retry
        self.retry_after_s = retry_after_s
        self.gone = gone


class DeliveryChannel(Protocol):
    """A way to reach the user or the platform: webhook, Web Push, FCM."""

    name: str

    async def deliver(self, payload: dict[str, Any], target: Target) -> None:
        """Deliver the notification `payload` to `target` or raise DeliveryFailed."""
        ...
