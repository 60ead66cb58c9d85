"""The support cases API: list and read cases (support:read), acknowledge, assign, note and resolve them
(support:act). The actor recorded is the caller's API key name."""

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, ConfigDict, Field

from contracts.events import CaseKind, CaseSeverity
from payments import cases
from payments.adapters.cases import PostgresCases
from payments.cases import Case, CaseResolved, CaseState, HistoryEntry, UnknownCase
from servicekit.http import STORABLE_TEXT, ApiError, error_responses
from servicekit.identity import Caller, Scope, requires

Reader = Annotated[Caller, Depends(requires(Scope.SUPPORT_READ))]
Actor = Annotated[Caller, Depends(requires(Scope.SUPPORT_ACT))]
CaseId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The case's id (bigint).")]
Text = Annotated[str, Field(min_length=1, max_length=2000, pattern=STORABLE_TEXT)]
"""What a person writes (notes, resolutions)."""


class CaseView(BaseModel):
    """An order a person has to own: why, how loud, who owns it, and how it ended."""

    id: int
    order_id: str
    user_id: str
    kind: CaseKind
    severity: CaseSeverity
    reason: str
    opened_at: datetime
    owner: str | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    repaged_at: datetime | None
    resolved_at: datetime | None
    resolved_by: str | None
    resolution: str | None
    age_s: float = Field(description="Seconds since it opened (until it resolved, once resolved).")


class HistoryView(BaseModel):
    at: datetime
    actor: str
    action: str
    detail: str


class CaseWithHistory(CaseView):
    history: list[HistoryView]


class CaseList(BaseModel):
    cases: list[CaseView]


class Acknowledgement(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: Text | None = None


class Assignment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    owner: Annotated[str, Field(min_length=1, max_length=200, pattern=STORABLE_TEXT)]


class Note(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: Text


class Resolution(BaseModel):
    model_config = ConfigDict(extra="forbid")
    resolution: Text


def case_view(case: Case, now: datetime) -> CaseView:
    fields = {name: getattr(case, name) for name in CaseView.model_fields if name != "age_s"}
    return CaseView(**fields, age_s=round(case.age_s(now), 3))


def _history_view(entry: HistoryEntry) -> HistoryView:
    return HistoryView(at=entry.at, actor=entry.actor, action=entry.action.value, detail=entry.detail)


def case_routes(book: PostgresCases) -> APIRouter:
    router = APIRouter(prefix="/v1/support/cases", tags=["support"])

    async def act(case_id: int, apply: Callable[[Case, datetime], tuple[Case, HistoryEntry]]) -> CaseView:
        try:
            case = await book.act(case_id, apply)
        except UnknownCase as exc:
            raise ApiError(404, "unknown_case", str(exc)) from None
        except CaseResolved as exc:
            raise ApiError(409, "case_resolved", str(exc)) from None
        return case_view(case, datetime.now(UTC))

    @router.get("", response_model=CaseList, responses=error_responses(422))
    async def list_cases(
        _: Reader, state: CaseState = CaseState.OPEN, kind: CaseKind | None = None, severity: CaseSeverity | None = None
    ) -> CaseList:
        """Cases by severity (critical first), then age (oldest first); open (not resolved) unless `state` says."""
        now = datetime.now(UTC)
        return CaseList(cases=[case_view(c, now) for c in await book.listing(state, kind, severity)])

    @router.get("/{case_id}", response_model=CaseWithHistory, responses=error_responses(404, 422))
    async def read_case(case_id: CaseId, _: Reader) -> CaseWithHistory:
        """One case with everything that happened to it, in order."""
        try:
            case, history = await book.get(case_id)
        except UnknownCase as exc:
            raise ApiError(404, "unknown_case", str(exc)) from None
        view = case_view(case, datetime.now(UTC))
        return CaseWithHistory(**view.model_dump(), history=[_history_view(e) for e in history])

    @router.post("/{case_id}/acknowledge", response_model=CaseView, responses=error_responses(404, 409, 422))
    async def acknowledge(case_id: CaseId, body: Acknowledgement, caller: Actor) -> CaseView:
        """The caller owns up to the case (its owner unless it has one): it stops re-paging."""
        return await act(case_id, lambda c, now: cases.acknowledge(c, caller.name, body.note, now))

    @router.post("/{case_id}/assign", response_model=CaseView, responses=error_responses(404, 409, 422))
    async def assign(case_id: CaseId, body: Assignment, caller: Actor) -> CaseView:
        """Give the case to `owner`."""
        return await act(case_id, lambda c, now: cases.assign(c, caller.name, body.owner, now))

    @router.post("/{case_id}/notes", response_model=CaseView, responses=error_responses(404, 422))
    async def add_note(case_id: CaseId, body: Note, caller: Actor) -> CaseView:
        """A note in the case's history (a resolved case takes notes too)."""
        return await act(case_id, lambda c, now: cases.note(c, caller.name, body.note, now))

    @router.post("/{case_id}/resolve", response_model=CaseView, responses=error_responses(404, 409, 422))
    async def resolve(case_id: CaseId, body: Resolution, caller: Actor) -> CaseView:
        """Close the case, saying how it was settled; 409 case_resolved if it was already."""
        return await act(case_id, lambda c, now: cases.resolve(c, caller.name, body.resolution, now))

    return router
