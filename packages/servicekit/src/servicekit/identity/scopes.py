"""What an API key may do. A key holds a set of scopes; every business route names the one it needs."""

from enum import StrEnum

SCOPES_ATTRIBUTE = "__credited_scopes__"
"""The attribute on a route's guard (FastAPI) or a page's handler (the reconciler) naming the scopes it needs:
the tests that list every route read it."""


class Scope(StrEnum):
    """The rights a platform backend, a risk reviewer or a support agent is given, one per kind of act."""

    ORDERS_WRITE = "orders:write"
    """Place top-up orders for users (platform backends)."""
    ORDERS_READ = "orders:read"
    """Read orders, their status, timelines and ledger entries."""
    WALLETS_READ = "wallets:read"
    """Read users' wallet balances."""
    USERS_WRITE = "users:write"
    """Register a user's wallet currency, or change a registered one."""
    REVIEW_DECIDE = "review:decide"
    """Release or reject an order held for risk review (the decision records the key)."""
    SUPPORT_READ = "support:read"
    """Look up an order's full timeline, notifications and deliveries for a user who asks."""
    SUPPORT_ACT = "support:act"
    """Act for a user: push a stuck order through, grant compensation, manage their subscriptions."""
    AUDIT_READ = "audit:read"
    """Read every paid order, refund and credit of a time window in bulk (the money audit reads the ledger's)."""
    AUDIT_RUN = "audit:run"
    """Run the money audit now: it re-announces the payment of every paid order it finds never credited."""


def parse_scopes(values: list[str] | tuple[str, ...]) -> frozenset[Scope]:
    """Scopes from their names (`orders:write`), refusing an unknown one with the list of known ones."""
    known = {s.value: s for s in Scope}
    unknown = [v for v in values if v not in known]
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return frozenset(known[v] for v in values)
