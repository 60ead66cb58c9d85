"""How one reconciler worker asks another for an order's timeline without handing it the caller's API key.

Any worker answers for any order: a worker that does not have the order's partition asks the worker that has it,
at the web address that worker advertises in the consumer group's metadata. Whoever can join the group (the
reconciler's Kafka principal) can advertise any address, so the caller's key must not travel there: a support key
seen once is a support key kept. The asking worker checks the caller's key itself, then sends a peer grant instead:
an HMAC over the order id and an expiry a few seconds ahead, under RECONCILER_PEER_SECRET, which every worker of
the deployment shares. The worker that has the order answers a grant for that order until it expires, and nothing
else. A grant seen by a stranger reads one order's timeline for a few seconds, which the reconciler's principal
can read off its topics anyway.

The secret rotates like the others: a comma-separated list, signed with the first, any accepted. Pure apart from
the clock, which is passed in.
"""

import hashlib
import hmac
import re
import time
from collections.abc import Callable, Sequence

PEER_HEADER = "X-Credited-Peer-Grant"
"""The header a forwarded timeline request carries its grant in (and no Authorization)."""

GRANT_TTL_S = 10
"""How long a grant is answered: long enough for the one request it goes with, on a slow network."""
_EXPIRY = re.compile(r"[0-9]{1,12}")
_MAC = re.compile(r"[0-9a-f]{64}")


class PeerGrants:
    """Makes and checks the grants that let one worker ask another for one order's timeline."""

    def __init__(self, secrets: Sequence[str], *, now: Callable[[], float] = time.time) -> None:
        keys = [s.encode() for s in secrets if s]
        if not keys:
            raise ValueError("peer grants need a secret (RECONCILER_PEER_SECRET)")
        self._keys = keys
        self._now = now

    def grant(self, order_id: str) -> str:
        """A grant to read `order_id`'s timeline, answered until GRANT_TTL_S from now."""
        expires_at = int(self._now()) + GRANT_TTL_S
        return f"{expires_at}.{self._mac(self._keys[0], order_id, expires_at)}"

    def admits(self, grant: str | None, order_id: str) -> bool:
        """Whether `grant` was made for `order_id` with one of the secrets and has not expired."""
        expiry, _, mac = (grant or "").partition(".")
        # The form a grant has, checked before anything is compared: compare_digest raises on non-ASCII text (a 500
        # anyone could cause with "9999999999.é"), and isdigit takes other scripts' digits.
        if not _EXPIRY.fullmatch(expiry) or not _MAC.fullmatch(mac):
            return False
        expires_at = int(expiry)
        matched = False
        for key in self._keys:  # every secret, so the time taken says nothing about which one matched
            matched |= hmac.compare_digest(self._mac(key, order_id, expires_at), mac)
        return matched and self._now() < expires_at

    @staticmethod
    def _mac(key: bytes, order_id: str, expires_at: int) -> str:
        return hmac.new(key, f"timeline\n{order_id}\n{expires_at}".encode(), hashlib.sha256).hexdigest()
