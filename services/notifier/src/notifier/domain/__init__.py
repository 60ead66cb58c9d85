"""The notifier's pure rules: what the user is told about each status change, and their order's timeline.

No I/O here: no Kafka, SQL, HTTP or metrics (import-linter checks it).
"""

from notifier.domain.locales import (
    DEFAULT_LOCALE,
    LOCALES,
    Preferences,
    format_money,
    format_time,
    resolve_locale,
    valid_time_zone,
)
from notifier.domain.messages import (
    Notification,
    Urgency,
    notification_id,
    push_topic,
    render,
    render_expired,
    urgency_for,
)
from notifier.domain.timeline import Expiry, Step, StepState, Timeline, page_text, timeline

__all__ = [
    "DEFAULT_LOCALE",
    "LOCALES",
    "Expiry",
    "Notification",
    "Preferences",
    "Step",
    "StepState",
    "Timeline",
    "Urgency",
    "format_money",
    "format_time",
    "notification_id",
    "page_text",
    "push_topic",
    "render",
    "render_expired",
    "resolve_locale",
    "timeline",
    "urgency_for",
    "valid_time_zone",
]
