"""The notifier's delivery timeouts are deadlines: aiohttp reads a total of 0 or less as none at all, so a
receiver that never answers would hold a delivery past its lease, and another worker would send it again."""

import pytest
from pydantic import ValidationError

from notifier.config import Settings


@pytest.mark.parametrize("variable", ["NOTIFIER_WEBHOOK_TIMEOUT_S", "NOTIFIER_PUSH_TIMEOUT_S"])
@pytest.mark.parametrize("value", ["0", "-1"])
def test_a_delivery_timeout_of_zero_or_less_is_refused_at_start(
    variable: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=variable.removeprefix("NOTIFIER_").lower()):
        Settings()
