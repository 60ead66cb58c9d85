"""Process-wide logging set-up, called once from a service's main.

Services log with the standard library (`logging.getLogger(__name__)`, %-style arguments); structlog is only the
formatter of those records. Each line carries the time (UTC), the level, the service, the logger, the message and
whatever context is bound where it was logged (`bound(order_id=..., event_id=...)`: the consumer binds an
envelope's ids, the HTTP server a request id), so `grep '"order_id":"ord_1"'` across the services' logs tells one
order's story.

CREDITED_LOG_FORMAT picks the shape: `json` (one object per line, what a log shipper reads) or `console`
(readable `key=value` lines). Unset, it follows CREDITED_ENV: `console` in development (the local stack, the
demo's terminal), `json` everywhere else.
"""

import logging
import logging.config
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Literal

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from contracts.codec import Envelope

LogFormat = Literal["json", "console"]

QUIET = ("aiokafka", "kafka", "uvicorn.access")
"""Loggers kept at WARNING: their INFO is chatter about connections, not about orders."""


REQUEST_ID: ContextVar[str | None] = ContextVar("credited_request_id", default=None)
"""The id of the HTTP request a line is logged in (servicekit.request_id sets it for each request). A variable of
its own, set and reset once per request: structlog's `bound_contextvars` walks the whole context on every bind, a
cost payments pays on every request while most requests log nothing."""


def default_format(environment: str) -> LogFormat:
    return "console" if environment == "development" else "json"


@contextmanager
def bound(**context: object) -> Iterator[None]:
    """Every line logged inside (by this task and the tasks it starts) carries `context`; `None` values are left
    out. Restores what was bound before on exit."""
    with structlog.contextvars.bound_contextvars(**{k: v for k, v in context.items() if v is not None}):
        yield


def about(order_id: str, envelope: Envelope | None = None) -> dict[str, str]:
    """An order's ids for one line, as its `extra`: `log.info("...", ..., extra=about(order_id, envelope))`.
    Free when the line is not logged, so it suits hot paths where binding per order would cost."""
    if envelope is None:
        return {"order_id": order_id}
    return {"order_id": order_id, "event_id": envelope.event_id, "correlation_id": envelope.correlation_id}


def formatter(service: str, fmt: LogFormat) -> structlog.stdlib.ProcessorFormatter:
    """A stdlib logging formatter that renders a record, with the context bound where it was logged, as `fmt`."""

    def add_service(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
        event.setdefault("service", service)
        return event

    pre_chain: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        _add_request_id,
        # `log.error(..., extra={"order_id": ...})`: ids for one line, at no cost when the line is not logged
        structlog.stdlib.ExtraAdder(),
        _drop_color_message,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        add_service,
    ]
    rendering: list[Processor] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if fmt == "json":
        rendering += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer(serializer=_dumps)]
    else:
        rendering.append(
            structlog.dev.ConsoleRenderer(
                colors=False, exception_formatter=structlog.dev.plain_traceback, sort_keys=False
            )
        )
    return structlog.stdlib.ProcessorFormatter(foreign_pre_chain=pre_chain, processors=rendering)


def _add_request_id(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    request_id = REQUEST_ID.get()
    if request_id is not None:
        event.setdefault("request_id", request_id)
    return event


def _drop_color_message(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    event.pop("color_message", None)  # uvicorn's copy of its message with terminal colours
    return event


FIRST = ("timestamp", "level", "service", "logger", "event")
"""The keys every JSON line starts with, in this order; the bound context follows."""


def _dumps(event: Any, **_: Any) -> str:
    # Compact (`"order_id":"ord_1"`, no space), and anything orjson does not know as its str().
    ordered = {key: event[key] for key in FIRST if key in event} | event
    return orjson.dumps(ordered, default=str).decode()


def dict_config(level: str, service: str, fmt: LogFormat) -> dict[str, Any]:
    """The logging set-up as a `logging.config.dictConfig` dict: one handler on stderr formatting as `fmt`
    (faust's worker takes it as its `logging_config`)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"credited": {"()": lambda: formatter(service, fmt)}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "credited"}},
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        "loggers": {name: {"level": "WARNING"} for name in QUIET},
    }


def configure(level: str, service: str, fmt: LogFormat) -> None:
    """Log at `level` and above to stderr as `fmt`; called again (a copy of the service), it replaces the set-up."""
    logging.config.dictConfig(dict_config(level, service, fmt))
