"""The notifier's pure rules: what the user is told about each status change, and their order's timeline.

No I/O here: no Kafka, SQL, HTTP or metrics (import-linter checks it).
"""

from notifier.domain.messages import (
    DEFAULT_LOCALE,
    LOCALES,
    Notification,
    Urgency,
    format_money,
    notification_id,
    push_topic,
    render,
    resolve_locale,
    urgency_for,
)
from notifier.domain.timeline import Step, StepState, Timeline, page_text, timeline

__all__ = [
    "DEFAULT_LOCALE",
    "LOCALES",
    "Notification",
    "Step",
    "StepState",
    "Timeline",
    "Urgency",
    "format_money",
    "notification_id",
    "page_text",
    "push_topic",
    "render",
    "resolve_locale",
    "timeline",
    "urgency_for",
]
