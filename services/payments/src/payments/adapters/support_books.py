"""PostgresSupportBooks: what the support API reads of payments' tables (orders by id, user or provider
transaction, an order's own facts, its cases and the acts on it) and how an act is recorded: the support_actions
row and its command in the outbox, in one transaction, once per Idempotency-Key."""

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

import asyncpg

from payments.adapters.postgres import PostgresPayments
from payments.support import (
    Entry,
    OrderFacts,
    Refused,
    SupportAction,
    act_fingerprint,
    command_event_id,
    outcome,
    refusal,
    send_command,
)
from servicekit.identity import Caller

SearchKey = Literal["order_id", "user_id", "provider_txn_id"]
SEARCH_LIMIT = 100
LOCK_TIMEOUT = "3s"  # callbacks and acts hold an order's row briefly; a person is told to retry, not kept waiting

_ORDER = (
    "SELECT o.order_id, o.user_id, o.amount, o.currency::text AS currency, o.channel, o.provider, o.provider_txn_id,"
    " o.payment_status, o.status, o.created_at, o.paid_at, o.review_status, o.review_reason, o.reviewed_at,"
    " o.reviewed_by_key_name, o.reviewed_reason, o.updated_at,"
    " (SELECT count(*) FROM support_cases c WHERE c.order_id = o.order_id AND c.resolved_at IS NULL) AS open_cases"
    " FROM orders o"
)
_SEARCH = {
    key: f"{_ORDER} WHERE o.{key} = $1 ORDER BY o.created_at DESC, o.order_id DESC LIMIT {SEARCH_LIMIT}"
    for key in ("order_id", "user_id", "provider_txn_id")
}
_CASES = (
    "SELECT id, order_id, user_id, kind, severity, reason, opened_at, owner, acknowledged_at, acknowledged_by,"
    " repaged_at, resolved_at, resolved_by, resolution, extract(epoch FROM (coalesce(resolved_at, now()) - opened_at))"
    " AS age_s FROM support_cases WHERE order_id = $1 ORDER BY opened_at, id"
)
_ACTIONS = (
    "SELECT id, order_id, action, reason, actor_name, actor_key_id, at, command_event_id, outcome, idempotency_key,"
    " request_fingerprint FROM support_actions"
)
_ACTIONS_OF = f"{_ACTIONS} WHERE order_id = $1 ORDER BY id"
_ACTION_BY_KEY = f"{_ACTIONS} WHERE idempotency_key = $1"
_RECORD = (
    "INSERT INTO support_actions (order_id, action, reason, actor_key_id, actor_name, at, idempotency_key, outcome,"
    " request_fingerprint) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (idempotency_key) DO NOTHING"
    " RETURNING id"
)
_COMMAND_SENT = "UPDATE support_actions SET command_event_id = $2 WHERE id = $1"
_ASKED = (
    "SELECT count(*) FILTER (WHERE action = 'refund') AS refunds, count(*) FILTER (WHERE action = 'redrive_credit')"
    " AS redrives, count(*) FILTER (WHERE action = 'grant_compensation') AS compensations FROM support_actions"
    " WHERE order_id = $1"
)


class UnknownOrder(Exception):
    """No order by that id."""


class IdempotencyKeyReused(Exception):
    """The Idempotency-Key was used for another act (another order, action, reason or amount)."""


@dataclass(frozen=True, slots=True)
class ActionRecord:
    """An act on an order as support_actions holds it."""

    id: int
    order_id: str
    action: str
    reason: str
    by: str
    at: datetime
    command_event_id: str | None
    outcome: str

    def entry(self) -> Entry:
        return Entry(self.at, "support", self.action, f"{self.by}: {self.reason}", {"outcome": self.outcome})


def _action(row: asyncpg.Record) -> ActionRecord:
    return ActionRecord(
        row["id"], row["order_id"], row["action"], row["reason"], row["actor_name"], row["at"],
        row["command_event_id"], row["outcome"],
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Act:
    """A person's request to act on an order."""

    order_id: str
    action: SupportAction
    reason: str
    amount: int | None
    caller: Caller
    idempotency_key: str | None
    at: datetime

    @property
    def fingerprint(self) -> str:
        return act_fingerprint(self.order_id, self.action, self.reason, self.amount)


class PostgresSupportBooks:
    """The support API's side of payments' database."""

    def __init__(self, pool: asyncpg.Pool, uow: Callable[[], PostgresPayments]) -> None:
        self._pool = pool
        self._uow = uow

    async def search(self, key: SearchKey, value: str) -> list[asyncpg.Record]:
        async with self._pool.acquire() as conn:
            return list(await conn.fetch(_SEARCH[key], value))

    async def cases(self, order_id: str) -> list[asyncpg.Record]:
        async with self._pool.acquire() as conn:
            return list(await conn.fetch(_CASES, order_id))

    async def actions(self, order_id: str) -> list[ActionRecord]:
        async with self._pool.acquire() as conn:
            return [_action(r) for r in await conn.fetch(_ACTIONS_OF, order_id)]

    async def own_facts(self, order_id: str) -> list[Entry]:
        """What payments itself recorded of the order: placed, paid or failed, held and decided, every callback,
        its payment queries and its refund."""
        async with self._pool.acquire() as conn:
            order = await conn.fetchrow(_SEARCH["order_id"], order_id)
            if order is None:
                return []
            callbacks = await conn.fetch(
                "SELECT id, provider, received_at, outcome, reason FROM callbacks WHERE order_id = $1 ORDER BY id",
                order_id,
            )
            query = await conn.fetchrow("SELECT * FROM payment_queries WHERE order_id = $1", order_id)
            refund = await conn.fetchrow("SELECT * FROM refunds WHERE order_id = $1", order_id)
        return [*_order_entries(order), *_callback_entries(callbacks), *_query_and_refund(query, refund)]

    async def act(self, act: Act) -> tuple[ActionRecord, bool]:
        """Record the act with its command (in the outbox) and answer it with True; the act recorded first under
        the same Idempotency-Key with False; raise UnknownOrder, ActRefused, IdempotencyKeyReused."""
        async with self._uow() as tx:
            await tx.conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            order = await tx.get(act.order_id, for_update=True)  # acts on one order, one at a time
            if order is None:
                raise UnknownOrder(act.order_id)
            first = await self._first(tx.conn, act)
            if first is not None:
                return first, False
            refund: str | None = await tx.conn.fetchval(
                "SELECT status FROM refunds WHERE order_id = $1", order.order_id
            )
            asked = await tx.conn.fetchrow(_ASKED, order.order_id)
            assert asked is not None  # an aggregate answers one row
            facts = OrderFacts(order, refund, asked["refunds"], asked["redrives"], asked["compensations"])
            refused = refusal(act.action, facts, act.amount)
            if refused is not None:
                raise ActRefused(refused)
            record = await _record(tx.conn, act, outcome(act.action))
            event_id = command_event_id(act.order_id, act.action, act.idempotency_key or f"row-{record.id}")
            by, reason, amount = act.caller.name, act.reason, act.amount
            if send_command(tx, act.action, facts, by=by, reason=reason, amount=amount, now=act.at, event_id=event_id):
                await tx.conn.execute(_COMMAND_SENT, record.id, event_id)
                record = replace(record, command_event_id=event_id)
            return record, True

    async def record_resend(self, act: Act, outcome: str) -> tuple[ActionRecord, bool]:
        """Record a notification resend the notifier answered (no command: the notifier did it). The same request
        under the same Idempotency-Key, recorded meanwhile by a request that ran at the same time (the notifier
        resent once for both), is answered with that record."""
        try:
            async with self._uow() as tx:
                first = await self._first(tx.conn, act)
                if first is not None:
                    return first, False
                return await _record(tx.conn, act, outcome), True
        except IdempotencyKeyReused:
            first = await self.first_under(act)  # committed by now; raises again for a different request
            if first is None:
                raise
            return first, False

    async def first_under(self, act: Act) -> ActionRecord | None:
        """The act already recorded under the request's Idempotency-Key, if any."""
        async with self._pool.acquire() as conn:
            return await self._first(conn, act)

    async def exists(self, order_id: str) -> bool:
        async with self._pool.acquire() as conn:
            return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM orders WHERE order_id = $1)", order_id))

    @staticmethod
    async def _first(conn: Any, act: Act) -> ActionRecord | None:
        if act.idempotency_key is None:
            return None
        row = await conn.fetchrow(_ACTION_BY_KEY, act.idempotency_key)
        if row is None:
            return None
        if not _same_request(row, act):
            raise IdempotencyKeyReused(act.idempotency_key)
        return _action(row)


def _same_request(row: asyncpg.Record, act: Act) -> bool:
    """Whether the act recorded under the key was asked by `act`'s caller (by key name, which a rotation keeps, as
    payments scopes an order's Idempotency-Key) with its order and body (one recorded before acts kept their
    request's fingerprint: its order, action and reason, all it kept of the request). Another person's act is never
    answered as one's own: the audit trail would say they acted when they did not."""
    if row["actor_name"] != act.caller.name:
        return False
    if row["request_fingerprint"] is not None:
        return bool(row["request_fingerprint"] == act.fingerprint)
    return (row["order_id"], row["action"], row["reason"]) == (act.order_id, act.action.value, act.reason)


async def _record(conn: Any, act: Act, outcome: str) -> ActionRecord:
    """The act's support_actions row (who by key id and name, when, why); IdempotencyKeyReused if a request with
    the same key committed since we looked."""
    caller = act.caller
    row_id = await conn.fetchval(
        _RECORD, act.order_id, act.action.value, act.reason, caller.key_id, caller.name, act.at, act.idempotency_key,
        outcome, act.fingerprint,
    )  # fmt: skip
    if row_id is None:
        raise IdempotencyKeyReused(act.idempotency_key)
    return ActionRecord(row_id, act.order_id, act.action.value, act.reason, caller.name, act.at, None, outcome)


class ActRefused(Exception):
    """An act that cannot apply: the refusal's code and sentence."""

    def __init__(self, refused: Refused) -> None:
        super().__init__(refused.detail)
        self.refused = refused


def _order_entries(o: asyncpg.Record) -> list[Entry]:
    oid, money = o["order_id"], {"amount": o["amount"], "currency": o["currency"], "channel": o["channel"]}
    out = [Entry(o["created_at"], "payments", "order_placed", f"order placed by user {o['user_id']}", money)]
    if o["paid_at"] is not None:
        txn = {"provider": o["provider"], "provider_txn_id": o["provider_txn_id"]}
        out.append(Entry(o["paid_at"], "payments", "payment_succeeded", f"paid at {o['provider']}", txn))
        if o["review_status"] is not None:
            reason = o["review_reason"] or "risk review"
            out.append(Entry(o["paid_at"], "payments", "order_held", f"held for risk review: {reason}"))
    if o["payment_status"] == "failed":  # the row keeps no time of its own for it: when it last changed
        out.append(Entry(o["updated_at"], "payments", "payment_failed", f"payment of {oid} failed"))
    if o["reviewed_at"] is not None and o["review_status"] in ("released", "rejected"):
        by = o["reviewed_by_key_name"] or "unknown key"
        kind = "order_released" if o["review_status"] == "released" else "order_review_rejected"
        why = f": {o['reviewed_reason']}" if o["reviewed_reason"] else ""
        out.append(Entry(o["reviewed_at"], "payments", kind, f"review {o['review_status']} by {by}{why}"))
    return out


def _callback_entries(rows: list[asyncpg.Record]) -> list[Entry]:
    return [
        Entry(r["received_at"], "payments", "callback", f"{r['provider']} callback {r['outcome']}: {r['reason']}")
        for r in rows
    ]


def _query_and_refund(query: asyncpg.Record | None, refund: asyncpg.Record | None) -> list[Entry]:
    out = []
    if query is not None:  # the row keeps no time per query asked: the entry is when the next one is due
        detail = {"attempts": query["attempts"], "last_answer": query["last_answer"]}
        summary = (
            f"next query to {query['provider']} due ({query['attempts']} asked, last answer {query['last_answer']})"
        )
        out.append(Entry(query["due_at"], "payments", "payment_query_due", summary, detail))
    if refund is not None:
        detail = {"refund_id": refund["refund_id"], "attempts": refund["attempts"]}
        summary = f"refund {refund['status']}: {refund['reason']}"
        out.append(Entry(refund["created_at"], "payments", f"refund_{refund['status']}", summary, detail))
    return out
