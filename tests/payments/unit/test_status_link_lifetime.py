"""The lifetime of the status links payments answers: its own variable, else the one the notifier's push links
follow too, so one setting keeps both alike."""

import pytest

from payments.config import Settings
from servicekit.links import DEFAULT_TTL_S

VARIABLES = ("PAYMENTS_STATUS_LINK_TTL_S", "CREDITED_STATUS_LINK_TTL_S")


@pytest.mark.parametrize("variable", VARIABLES)
def test_the_status_link_lifetime_is_read_from_payments_or_the_shared_variable(
    variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert Settings().status_link_ttl_s == DEFAULT_TTL_S
    monkeypatch.setenv(variable, "86400")
    assert Settings().status_link_ttl_s == 86400


def test_payments_own_variable_wins_over_the_shared_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDITED_STATUS_LINK_TTL_S", "86400")
    monkeypatch.setenv("PAYMENTS_STATUS_LINK_TTL_S", "3600")
    assert Settings().status_link_ttl_s == 3600


def test_a_test_or_a_caller_may_still_set_it_by_name() -> None:
    assert Settings(status_link_ttl_s=60).status_link_ttl_s == 60
