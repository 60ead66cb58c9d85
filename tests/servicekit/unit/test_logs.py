"""Logs you can follow an order through: a stdlib log call comes out as one JSON line with the service and the
context bound where it was logged (an envelope's ids, a request's id), or as a readable key=value line; a
dead-lettered message's line carries its order id; every HTTP answer carries X-Request-ID and the request's lines
carry the same id."""

import io
import json
import logging
from collections.abc import Callable, Iterator

import httpx
import pytest
from prometheus_client import CollectorRegistry

from contracts.codec import envelope_for
from servicekit.consumer import KafkaConsumerLoop
from servicekit.http import create_app
from servicekit.logs import LogFormat, about, bound, formatter
from servicekit.request_id import HEADER, RequestId
from servicekit.settings import ServiceSettings
from tests.servicekit.consumer_fakes import FakeConsumer, KeptDeadLetters, Store, polled, record
from tests.servicekit.events import paid
from tests.servicekit.unit.test_consumer_batches import Handler, consumer_loop, run_polls


class Lines:
    """What a logger wrote, through servicekit's formatter, one entry a line."""

    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    def text(self) -> list[str]:
        return self.stream.getvalue().splitlines()

    def json(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.text()]


Capture = Callable[..., Lines]


@pytest.fixture
def capture() -> Iterator[Capture]:
    """`capture(logger_name, fmt)` sends that logger's lines, formatted as `fmt` for service `ledger`, to Lines."""
    attached: list[tuple[logging.Logger, logging.Handler, int]] = []

    def attach(name: str, fmt: LogFormat = "json") -> Lines:
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        handler.setFormatter(formatter("ledger", fmt))
        logger = logging.getLogger(name)
        attached.append((logger, handler, logger.level))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        return Lines(stream)

    yield attach
    for logger, handler, level in attached:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_a_stdlib_log_call_in_a_bound_context_is_one_json_line_with_the_envelope_ids_and_the_service(
    capture: Capture,
) -> None:
    lines = capture("ledger.handlers")
    event = paid("ord_traced")
    envelope = envelope_for(event, producer="payments")
    with bound(**about(event.order_id, envelope)):
        logging.getLogger("ledger.handlers").info("order %s credited: %d %s", event.order_id, 500, "CNY")
    logging.getLogger("ledger.handlers").info("after the order")

    first, after = lines.json()
    assert len(lines.text()) == 2
    assert first["event"] == "order ord_traced credited: 500 CNY"
    assert (first["order_id"], first["event_id"], first["correlation_id"]) == (
        "ord_traced",
        envelope.event_id,
        envelope.correlation_id,
    )
    assert (first["service"], first["logger"], first["level"]) == ("ledger", "ledger.handlers", "info")
    assert str(first["timestamp"]).endswith("Z")
    assert list(first)[:5] == ["timestamp", "level", "service", "logger", "event"]
    assert "order_id" not in after, "the context ends with its block"


def test_extra_ids_and_an_exception_stay_within_one_json_line(capture: Capture) -> None:
    lines = capture("payments.callbacks")
    try:
        raise ValueError("bad\nsignature")
    except ValueError:
        logging.getLogger("payments.callbacks").exception("callback refused", extra=about("ord_x"))
    (line,) = lines.text()
    parsed = json.loads(line)
    assert parsed["order_id"] == "ord_x"
    assert "ValueError: bad\nsignature" in str(parsed["exception"])


def test_the_console_format_is_one_readable_line_with_key_value_context(capture: Capture) -> None:
    lines = capture("ledger.console", "console")
    with bound(order_id="ord_seen", request_id=None):
        logging.getLogger("ledger.console").warning("order %s overdue", "ord_seen")
    (line,) = lines.text()
    assert "order ord_seen overdue" in line and "order_id=ord_seen" in line and "service=ledger" in line
    assert "warning" in line and "request_id" not in line, "an unset id is left out"
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


@pytest.mark.parametrize(
    ("environment", "chosen", "expected"),
    [("development", None, "console"), ("production", None, "json"), ("development", "json", "json")],
)
def test_the_log_format_follows_the_environment_unless_chosen(
    environment: str, chosen: str | None, expected: str
) -> None:
    settings = ServiceSettings.model_validate({"environment": environment, "log_format": chosen})
    assert settings.logs_as == expected


async def test_a_dead_lettered_messages_lines_carry_its_order_id_and_envelope_ids(capture: Capture) -> None:
    lines = capture("servicekit.consumer")
    store, dead = Store(), KeptDeadLetters()
    good, failing, undecodable = record("ord_ok", 1), record("ord_bad", 2), record("ord_garbled", 3, value=b"{")
    consumer = FakeConsumer([polled(good, failing, undecodable)])
    loop: KafkaConsumerLoop = consumer_loop(Handler(store, bad=frozenset({"ord_bad"})), store, consumer, dead)
    loop._max_attempts = 1
    await run_polls(loop, consumer, 1)

    assert set(dead.reasons()) == {b"ord_bad", b"ord_garbled"}
    logged = lines.json()
    dead_lettered = {line["order_id"]: line for line in logged if str(line["event"]).startswith("dead-lettering")}
    assert set(dead_lettered) == {"ord_bad", "ord_garbled"}
    failing_ids = dict(failing.headers)
    assert dead_lettered["ord_bad"]["event_id"] == failing_ids["event_id"].decode()
    assert dead_lettered["ord_bad"]["correlation_id"] == failing_ids["correlation_id"].decode()
    assert dead_lettered["ord_garbled"]["event_id"] == dict(undecodable.headers)["event_id"].decode()
    handler_failed = [line for line in logged if str(line["event"]).startswith("handler failed")]
    assert [line["order_id"] for line in handler_failed] == ["ord_bad"]
    assert handler_failed[0]["event_id"] == failing_ids["event_id"].decode()
    assert all((line["consumer"], line["poll_records"]) == ("g", 3) for line in logged), "every line: its poll"


def _app_logging_per_request() -> RequestId:
    app = create_app(title="t", version="1", registry=CollectorRegistry())

    @app.get("/work")
    async def work() -> dict[str, str]:
        logging.getLogger("ledger.http").info("working")
        return {"ok": "yes"}

    return RequestId(app)


async def test_an_http_answer_carries_the_request_id_sent_and_the_requests_lines_carry_it(capture: Capture) -> None:
    lines = capture("ledger.http")
    transport = httpx.ASGITransport(app=_app_logging_per_request())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        sent = await client.get("/work", headers={HEADER: "req-from-the-gateway.1"})
        made = await client.get("/work")
        refused = await client.get("/work", headers={HEADER: 'forged" "level":"error'})
        missing = await client.get("/nowhere", headers={HEADER: "req-404"})

    assert sent.headers[HEADER] == "req-from-the-gateway.1"
    assert len(made.headers[HEADER]) == 32 and made.headers[HEADER] != sent.headers[HEADER]
    assert refused.headers[HEADER] not in ('forged" "level":"error', made.headers[HEADER])
    assert (missing.status_code, missing.headers[HEADER]) == (404, "req-404"), "an error answer has it too"
    ids = [line["request_id"] for line in lines.json()]
    assert ids == [sent.headers[HEADER], made.headers[HEADER], refused.headers[HEADER]]


def test_a_sent_request_id_is_kept_only_when_it_is_a_sane_token() -> None:
    from servicekit.request_id import SANE

    assert SANE.fullmatch("0f8fad5b-d9cb-469f-a165-70867728950e")
    assert not SANE.fullmatch("x" * 129)
    assert not SANE.fullmatch("two words")
    assert not SANE.fullmatch("line\nbreak")
