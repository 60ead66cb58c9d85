"""Signed status links: one that works, and expired, tampered, other-order, other-user and rotated-out ones
refused; rotation signs with the first secret and accepts any."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from servicekit.links import LinkRefused, StatusLinks, secrets_from

OLD = "o" * 32
NEW = "n" * 40
NOW = 1_900_000_000.0


def links(*secrets: str, now: float = NOW) -> StatusLinks:
    return StatusLinks(list(secrets), now=lambda: now)


def refusal(verifier: StatusLinks, order_id: str, token: str | None) -> str:
    with pytest.raises(LinkRefused) as refused:
        verifier.verify(order_id, token)
    return refused.value.code


def test_a_fresh_link_grants_its_user_the_order_until_it_expires() -> None:
    token = links(NEW).token("ord_1", "user_42", ttl_s=600)
    grant = links(NEW, now=NOW + 599).verify("ord_1", token)
    assert (grant.order_id, grant.user_id, grant.expires_at) == ("ord_1", "user_42", int(NOW) + 600)


def test_an_expired_link_is_refused() -> None:
    token = links(NEW).token("ord_1", "user_42", ttl_s=600)
    assert refusal(links(NEW, now=NOW + 600), "ord_1", token) == "link_expired"


def test_a_link_for_another_order_is_refused() -> None:
    token = links(NEW).token("ord_1", "user_42")
    assert refusal(links(NEW), "ord_2", token) == "link_invalid"


@pytest.mark.parametrize("part", [0, 1, 2])
def test_a_link_with_any_part_changed_is_refused(part: int) -> None:
    token = links(NEW).token("ord_1", "user_42", ttl_s=600)
    pieces = token.split(".")
    pieces[part] = {
        0: str(int(NOW) + 10**6),
        1: "dXNlcl80Mw",
        2: pieces[2][:-1] + ("A" if pieces[2][-1] != "A" else "B"),
    }[part]
    assert refusal(links(NEW), "ord_1", ".".join(pieces)) == "link_invalid"


@pytest.mark.parametrize("token", [None, "", "abc", "1.2.3", "1.dXNlcg.!!!", "x" * 2000])
def test_a_malformed_or_missing_token_is_refused(token: str | None) -> None:
    assert refusal(links(NEW), "ord_1", token) == "link_malformed"


def test_during_a_rotation_new_links_use_the_first_secret_and_old_links_still_work() -> None:
    old_token = links(OLD).token("ord_1", "user_42")
    rotating = links(*secrets_from(f"{NEW}, {OLD}"))
    assert rotating.verify("ord_1", old_token).user_id == "user_42"
    new_token = rotating.token("ord_1", "user_42")
    assert links(NEW).verify("ord_1", new_token).user_id == "user_42"
    assert refusal(links(OLD), "ord_1", new_token) == "link_invalid"


def test_a_link_signed_with_a_retired_secret_is_refused() -> None:
    token = links(OLD).token("ord_1", "user_42")
    assert refusal(links(NEW), "ord_1", token) == "link_invalid"


def test_a_secret_shorter_than_32_characters_or_none_at_all_is_refused() -> None:
    with pytest.raises(ValueError, match="shorter"):
        StatusLinks(["short"])
    with pytest.raises(ValueError, match="CREDITED_STATUS_LINK_SECRET"):
        StatusLinks(secrets_from(None))


def test_the_url_carries_the_order_and_a_url_safe_token() -> None:
    url = links(NEW).url("https://status.example.com/", "ord_1", "user 42/ä")
    assert url.startswith("https://status.example.com/orders/ord_1?token=")
    token = url.split("token=", 1)[1]
    assert links(NEW).verify("ord_1", token).user_id == "user 42/ä"


@given(order_id=st.text(min_size=1, max_size=40), user_id=st.text(min_size=1, max_size=40))
def test_any_order_and_user_round_trip_and_never_verify_for_another_user(order_id: str, user_id: str) -> None:
    verifier = links(NEW)
    token = verifier.token(order_id, user_id)
    assert verifier.verify(order_id, token).user_id == user_id
    exp, _, mac = token.split(".")
    other = verifier.token(order_id, user_id + "x").split(".")[1]
    assert refusal(verifier, order_id, f"{exp}.{other}.{mac}") == "link_invalid"


def test_moving_characters_between_the_order_id_and_the_user_id_breaks_the_signature() -> None:
    verifier = links(NEW)
    exp, _, mac = verifier.token("ord_1\0u", "ser").split(".")
    moved = verifier.token("ord_1", "u\0ser").split(".")[1]
    assert refusal(verifier, "ord_1", f"{exp}.{moved}.{mac}") == "link_invalid"
