"""The simulated provider as an adapter: the same verdicts and wire format as the callback route has
today (so routing callbacks through the adapters changes nothing for it), and its refund fault knobs."""

import json
from datetime import UTC, datetime

import pytest

from payments.adapters.providers.simulated import SimulatedProvider, SimulatedRefunds
from payments.callbacks import Callback, _check
from payments.domain import CallbackAck, CallbackRejected, CloseStatus, PaymentState, RefundRequest
from servicekit.signatures import sign
from tests.payments.unit.fakes import FixedClock

NOW = 1_800_000_000
SECRETS = ["old-secret", "sim-secret"]


def body(**changes: object) -> bytes:
    fields = {
        "order_id": "ord_1",
        "provider_txn_id": "tx1",
        "status": "succeeded",
        "amount": 600,
        "currency": "CNY",
        "paid_at": datetime.fromtimestamp(NOW, UTC).isoformat(),
    }
    return json.dumps({**fields, **changes}).encode()


CASES = {
    "signed": (body(), sign("sim-secret", body(), NOW)),
    "signed with the old secret": (body(), sign("old-secret", body(), NOW)),
    "a failure": (body(status="failed"), sign("sim-secret", body(status="failed"), NOW)),
    "unsigned": (body(), None),
    "malformed": (body(), "t=1,v1=zz"),
    "wrong secret": (body(), sign("other", body(), NOW)),
    "stale": (body(), sign("sim-secret", body(), NOW - 301)),
    "from the future": (body(), sign("sim-secret", body(), NOW + 301)),
    "tampered": (body(amount=6000), sign("sim-secret", body(), NOW)),
    "not a callback": (b'{"order_id": 5}', sign("sim-secret", b'{"order_id": 5}', NOW)),
    "a float amount": (body(amount=6.5), sign("sim-secret", body(amount=6.5), NOW)),
    "not JSON": (b"\xff", sign("sim-secret", b"\xff", NOW)),
}


def adapter(refunds: SimulatedRefunds | None = None) -> SimulatedProvider:
    return SimulatedProvider("sim", SECRETS, refunds or SimulatedRefunds(latency_s=0), clock=lambda: NOW)


@pytest.mark.parametrize("case", sorted(CASES))
async def test_the_adapter_judges_a_callback_exactly_as_the_callback_route_does(case: str) -> None:
    raw, signature = CASES[case]
    expected, notice = await _check(Callback("sim", raw, signature), {"sim": SECRETS}, None, FixedClock(NOW))
    headers = {} if signature is None else {"X-Signature": signature}
    if notice is not None:
        callback = await adapter().verify_callback(raw, headers)
        assert callback.notice == notice
        assert callback.order_id == notice.order_id
        return
    assert expected is not None
    with pytest.raises(CallbackRejected) as caught:
        await adapter().verify_callback(raw, headers)
    assert (caught.value.status_code, caught.value.code, caught.value.detail) == (
        expected.status_code,
        expected.code,
        expected.detail,
    )


def test_the_answers_keep_the_simulated_wire_format() -> None:
    applied = adapter().reply(CallbackAck(200, "applied", "payment succeeded", "ord_1"))
    assert (applied.status_code, applied.content_type) == (200, "application/json")
    assert json.loads(applied.body) == {"result": "applied", "order_id": "ord_1", "detail": "payment succeeded"}
    detail = "signature does not match any active secret"
    refused = adapter().reply(CallbackAck(401, "signature_mismatch", detail))
    assert refused.status_code == 401
    assert json.loads(refused.body) == {"error": "signature_mismatch", "detail": detail}


async def test_refunds_keep_the_fault_knobs_and_are_idempotent_by_our_refund_id() -> None:
    refunds = SimulatedRefunds(failure_share=0.0, timeout_share=1.0, latency_s=0)
    sim = adapter(refunds)
    request = RefundRequest("ord_1", "refund-1", "tx1", 600, 600, "CNY")
    first = await sim.refund(request)
    assert first.status == "unknown"  # the timeout knob: the refund happened, the answer was lost
    found = await sim.query_refund("ord_1", "refund-1")
    assert found.status == "succeeded"
    assert (await sim.refund(request)) == found  # the same id again: the same refund
    assert (await sim.query_refund("ord_1", "refund-2")).status == "unknown"
    declined = SimulatedProvider("sim", SECRETS, SimulatedRefunds(failure_share=1.0, latency_s=0))
    assert (await declined.refund(request)).status == "failed"


async def test_a_query_knows_the_payments_it_verified_and_the_orders_it_closed() -> None:
    sim = adapter()
    raw, signature = CASES["signed"]
    await sim.verify_callback(raw, {"x-signature": signature or ""})
    paid = await sim.query_payment("ord_1")
    assert (paid.state, paid.provider_txn_id, paid.amount) == (PaymentState.PAID, "tx1", 600)
    assert paid.notice() is not None
    assert (await sim.close("ord_1")).status is CloseStatus.ALREADY_PAID
    assert (await sim.query_payment("ord_2")).state is PaymentState.PENDING
    assert (await sim.close("ord_2")).status is CloseStatus.CLOSED
    assert (await sim.query_payment("ord_2")).state is PaymentState.CLOSED


def test_a_refund_can_never_exceed_what_was_paid() -> None:
    with pytest.raises(ValueError, match="cannot come out of"):
        RefundRequest("ord_1", "refund-1", "tx1", 601, 600, "CNY")
    with pytest.raises(ValueError, match="cannot come out of"):
        RefundRequest("ord_1", "refund-1", "tx1", 0, 600, "CNY")
