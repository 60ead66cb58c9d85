"""The ledger's credit-dropping fault knob exists for the demo and the tests only."""

import pytest
from pydantic import ValidationError

from ledger.config import Settings


def test_a_production_ledger_refuses_to_start_with_the_credit_dropping_knob_set() -> None:
    with pytest.raises(ValidationError, match="CREDITED_ENV=development"):
        Settings(fault_drop_credit_share=0.02, environment="production")


def test_a_development_ledger_drops_credits_when_asked_and_production_runs_without_the_knob() -> None:
    assert Settings(fault_drop_credit_share=0.02, environment="development").fault_drop_credit_share == 0.02
    assert Settings(environment="production").fault_drop_credit_share == 0.0
