"""The money audit's HTTP API: paid orders in bulk (audit:read) and an audit run now (audit:run)."""

from datetime import UTC, datetime
from typing import Annotated

import asyncpg
from fastapi import APIRouter, Depends
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from payments.adapters.audit_books import PostgresAuditBooks
from payments.adapters.auditor import AuditBusy, Auditor
from payments.adapters.ledger_credits import LedgerUnreadable
from payments.auditing import AuditOutcome
from servicekit.http import ApiError, error_responses
from servicekit.identity import Caller, Scope, requires
from servicekit.pages import MAX_WINDOW, Window, next_cursor, window

SHOWN_FINDINGS = 1000


class RefundView(BaseModel):
    status: str = Field(description="succeeded or failed; requested or pending while the provider has not finished it")
    refund_id: str | None
    created_at: str


class PaidOrderView(BaseModel):
    """An order payments holds as paid: what the provider confirmed, and its refund if one was tried."""

    order_id: str
    user_id: str
    amount: int
    currency: str
    channel: str
    provider: str | None
    provider_txn_id: str | None
    paid_at: str
    review_status: str | None
    refund: RefundView | None


class PaidOrdersPage(BaseModel):
    orders: list[PaidOrderView]
    next: str | None = Field(description="Pass as `after` for the next page; null on the last page.")


class AuditRequest(BaseModel):
    """The window of payment times to audit: [since, until), until now if left out."""

    model_config = ConfigDict(extra="forbid")

    since: AwareDatetime
    until: AwareDatetime | None = None


class FindingView(BaseModel):
    order_id: str
    kind: str
    detail: str


class AuditView(BaseModel):
    """What an audit found, by kind and order (the first 1000), and the orders whose payment it announced again."""

    since: str
    until: str
    counts: dict[str, int]
    findings: list[FindingView]
    findings_shown: int
    redriven: list[str]
    in_grace: int = Field(description="Paid within the grace and not credited yet: in flight, not judged.")
    refunds_in_flight: int = Field(
        description="Neither credited nor refunded, with a refund the provider has not finished: not judged (never "
        "re-driven) until it has."
    )
    paid: dict[str, int] = Field(description="Minor units paid, by currency.")
    credited: dict[str, int]
    refunded: dict[str, int]


def audit_view(outcome: AuditOutcome) -> AuditView:
    report, w = outcome.report, outcome.window
    return AuditView(
        since=w.since.isoformat(),
        until=w.until.isoformat(),
        counts={str(k): n for k, n in report.counts().items()},
        findings=[FindingView(order_id=f.order_id, kind=f.mismatch, detail=f.detail) for f in outcome.findings][
            :SHOWN_FINDINGS
        ],
        findings_shown=min(len(outcome.findings), SHOWN_FINDINGS),
        redriven=outcome.redriven,
        in_grace=report.in_grace,
        refunds_in_flight=report.refunds_in_flight,
        paid=report.paid,
        credited=report.credited,
        refunded=report.refunded,
    )


def _paid_view(row: asyncpg.Record) -> PaidOrderView:
    refund = None
    if row["refund_status"] is not None:
        refund = RefundView(
            status=row["refund_status"], refund_id=row["refund_id"], created_at=row["refunded_at"].isoformat()
        )
    return PaidOrderView(
        **{k: row[k] for k in ("order_id", "user_id", "amount", "currency", "channel", "provider", "provider_txn_id")},
        paid_at=row["paid_at"].isoformat(),
        review_status=row["review_status"],
        refund=refund,
    )


def audit_routes(books: PostgresAuditBooks, auditor: Auditor | None) -> APIRouter:
    """The bulk read always; the run only where the audit can read the ledger (auditor configured)."""
    router = APIRouter(prefix="/v1", tags=["audit"])

    @router.get("/audit/payments", response_model=PaidOrdersPage, responses=error_responses(400, 422))
    async def paid_orders(
        _: Annotated[Caller, Depends(requires(Scope.AUDIT_READ))], page: Annotated[Window, Depends(window)]
    ) -> PaidOrdersPage:
        """Every order paid in [since, until), by payment time, in keyset pages, with its refund if any."""
        rows = await books.page(page)
        cursor = next_cursor([(r["paid_at"], r["order_id"]) for r in rows], page.limit)
        return PaidOrdersPage(orders=[_paid_view(r) for r in rows], next=cursor)

    @router.post("/audits", response_model=AuditView, responses=error_responses(400, 409, 422, 502))
    async def run_audit(body: AuditRequest, _: Annotated[Caller, Depends(requires(Scope.AUDIT_RUN))]) -> AuditView:
        """Run the money audit now over the orders paid in [since, until): it re-announces the payment of every
        paid order it finds never credited nor refunded (past the grace), and answers what it found."""
        if auditor is None:
            # 409, not 503: nothing is down, this deployment was not given the ledger to audit against.
            detail = "payments has no ledger to audit against (PAYMENTS_AUDIT_LEDGER_URL, _API_KEY)"
            raise ApiError(409, "audit_not_configured", detail)
        now = datetime.now(UTC)
        until = (body.until or now).astimezone(UTC)
        since = body.since.astimezone(UTC)
        if until <= since:
            raise ApiError(400, "empty_window", "`until` must be after `since`")
        if until - since > MAX_WINDOW:
            raise ApiError(400, "window_too_long", f"an audit covers {MAX_WINDOW.days} days at most")
        try:
            return audit_view(await auditor.run(since, body.until))
        except AuditBusy as exc:
            raise ApiError(409, "audit_running", str(exc)) from None
        except LedgerUnreadable as exc:
            raise ApiError(502, "ledger_unreadable", str(exc)) from None

    return router
