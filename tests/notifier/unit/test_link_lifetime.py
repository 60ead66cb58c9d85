"""The lifetime of the status links the notifier signs comes from its settings: its own variable, else the one
the services share."""

import pytest

from notifier.config import Settings
from servicekit.links import DEFAULT_TTL_S

VARIABLES = ("NOTIFIER_STATUS_LINK_TTL_S", "CREDITED_STATUS_LINK_TTL_S")


@pytest.mark.parametrize("variable", VARIABLES)
def test_the_push_link_lifetime_is_read_from_the_notifiers_or_the_shared_variable(
    variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert Settings().status_link_ttl_s == DEFAULT_TTL_S
    monkeypatch.setenv(variable, "86400")
    assert Settings().status_link_ttl_s == 86400


def test_the_notifiers_own_variable_wins_over_the_shared_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDITED_STATUS_LINK_TTL_S", "86400")
    monkeypatch.setenv("NOTIFIER_STATUS_LINK_TTL_S", "3600")
    assert Settings().status_link_ttl_s == 3600
