"""The grants one reconciler worker asks another with: bound to one order, answered a few seconds, under the
workers' shared secret (any of a rotation's), and compared in constant time."""

import pytest

from reconciler.adapters.peers import GRANT_TTL_S, PeerGrants

NOW = 1_800_000_000.0


def grants(*secrets: str, at: float = NOW) -> PeerGrants:
    return PeerGrants(list(secrets), now=lambda: at)


def test_a_grant_admits_its_own_order_until_it_expires_and_no_other_order() -> None:
    grant = grants("s1").grant("ord_1")
    assert grants("s1").admits(grant, "ord_1")
    assert grants("s1", at=NOW + GRANT_TTL_S - 1).admits(grant, "ord_1")
    assert not grants("s1", at=NOW + GRANT_TTL_S).admits(grant, "ord_1")
    assert not grants("s1").admits(grant, "ord_2")


def test_a_grant_made_with_a_retired_secret_is_admitted_while_the_rotation_lists_it() -> None:
    old = grants("s-old").grant("ord_1")
    assert grants("s-new", "s-old").admits(old, "ord_1")
    assert not grants("s-new").admits(old, "ord_1")
    assert grants("s-new", "s-old").admits(grants("s-new", "s-old").grant("ord_1"), "ord_1")


def test_a_grant_whose_expiry_was_moved_or_that_is_malformed_is_refused() -> None:
    grant = grants("s1").grant("ord_1")
    expiry, _, mac = grant.partition(".")
    assert not grants("s1").admits(f"{int(expiry) + 3600}.{mac}", "ord_1")
    for bad in (None, "", ".", "x.y", f"{expiry}.", f"-1.{mac}", f"{'9' * 13}.{mac}"):
        assert not grants("s1").admits(bad, "ord_1"), bad


def test_no_secret_no_grants() -> None:
    with pytest.raises(ValueError, match="RECONCILER_PEER_SECRET"):
        PeerGrants([])
