"""The notifier's retention: notifications, their deliveries and support resends, deleted once past their keep time.

At 1,500 orders/s, each a few notifications with a few deliveries each, the notifier would add hundreds of millions of
rows a day for ever. Past NOTIFIER_NOTIFICATIONS_KEEP_S (90 days, longer than a delivery is retried and a status link
opens its page) nothing reads them but the inbox, the status page and the support timeline, which then show no more.

Resends go before their notifications, and nothing is deleted while a delivery of it is still pending: a resend once
asked longer ago, a notification once made longer ago and no resend of it is left. Deliveries are never pruned on
their own: they go with their notification or resend, by the foreign keys' ON DELETE CASCADE (found by the
deliveries' key, and by deliveries_resend_id), settled ones still within the keep time included (retried after their
notification was made). An index of the deliveries' own age would cost every delivery settled in the hot path an index
entry (the notifier's burst bench took 0.89x the deliveries a second with one); waiting for each delivery's own age
would have each batch read again every notification of a receiver's outage, retried for days. Each table's rows past
the keep time are found by an index on the stamped column (migration 0010).

The conditions' subqueries end in OFFSET 0, which keeps PostgreSQL from turning them into an anti-join (or a hashed
subplan): it chose one that read every pending delivery to build a hash, millions in a receiver's outage, each batch.
With it, each row past the keep time is looked up by an index, and a batch reads about the rows it deletes.

A batch decides from the snapshot it started with, so a resend recorded meanwhile (support asking again for an order
past its keep time) is not seen: its foreign key refuses the notification's delete (migration 0012, no cascade), and
the batch fails and is tried again at the next interval, which sees it. A cascade would delete the resend and its
pending deliveries with the notification, after support was told they were queued: the user never got it.
"""

import asyncpg

from servicekit.retention import Pruned, Retention

NOTHING_PENDING_OF_RESEND = (
    "NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.resend_id = resends.resend_id AND d.state = 'pending' OFFSET 0)"
)
"""A resend none of whose deliveries is pending (found by deliveries_resend_id)."""

NOTHING_PENDING_NOR_RESENT = (
    "NOT EXISTS (SELECT 1 FROM deliveries d"
    " WHERE d.notification_id = notifications.notification_id AND d.state = 'pending' OFFSET 0)"
    " AND NOT EXISTS (SELECT 1 FROM resends r WHERE r.notification_id = notifications.notification_id OFFSET 0)"
)
"""A notification none of whose deliveries is pending (found by the deliveries' key) and with no resend left (by
resends_notification_id): a resend kept keeps what it resent, for the support timeline."""


def pruned(keep_s: float) -> tuple[Pruned, Pruned]:
    """The notifier's tables past `keep_s`, children first: resends, then notifications (their deliveries with them)."""
    return (
        Pruned("resends", "resends", "requested_at", keep_s, only=NOTHING_PENDING_OF_RESEND),
        Pruned("notifications", "notifications", "created_at", keep_s, only=NOTHING_PENDING_NOR_RESENT),
    )


def notification_retention(pool: asyncpg.Pool, keep_s: float) -> Retention:
    """Deletes the notifier's notifications, deliveries and resends older than `keep_s` (see the module)."""
    return Retention(pool, *pruned(keep_s))
