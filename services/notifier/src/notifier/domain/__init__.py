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
from notifier.domain.reasons import REASON_CODES, for_platform, reason_code
from notifier.domain.timeline import Expiry, Step, StepState, Timeline, page_text, timeline

__all__ = [
    "DEFAULT_LOCALE",
    "LOCALES",
    "REASON_CODES",
    "Expiry",
    "Notification",
    "Preferences",
    "Step",
    "StepState",
    "Timeline",
    "Urgency",
    "for_platform",
    "format_money",
    "format_time",
    "notification_id",
    "page_text",
    "push_topic",
    "reason_code",
    "render",
    "render_expired",
    "resolve_locale",
    "timeline",
    "urgency_for",
    "valid_time_zone",
]
