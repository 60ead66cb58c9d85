"""How many copies of each service the local stack runs: one payments process and one ledger payments consumer on
the one machine it shares, two reconciler workers, other counts where the environment asks; and the deployed
shape's ledger consumers are the ledger's own default."""

from pathlib import Path

import pytest

from credited.stack.local import LEDGER_PAYMENTS_CONSUMERS, LocalStack, StackConfig
from ledger.config import Settings as LedgerSettings

SHAPE = ("PAYMENTS_PROCESSES", "RECONCILER_WORKERS", "LEDGER_PAYMENTS_CONSUMERS")


@pytest.fixture(autouse=True)
def no_shape_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in SHAPE:
        monkeypatch.delenv(variable, raising=False)


def test_the_local_stack_runs_one_payments_process_one_ledger_consumer_and_two_reconciler_workers(
    tmp_path: Path,
) -> None:
    stack = LocalStack(StackConfig.from_environment(tmp_path))
    assert (stack.config.payments_processes, stack.config.reconciler_workers) == (1, 2)
    assert stack.service_env("ledger")["LEDGER_PAYMENTS_CONSUMERS"] == "1"
    assert stack.service_env("payments")["PAYMENTS_PROCESSES"] == "1"


def test_the_environment_gives_the_local_stack_more_copies_where_it_has_the_cores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYMENTS_PROCESSES", "3")
    monkeypatch.setenv("RECONCILER_WORKERS", "1")
    monkeypatch.setenv("LEDGER_PAYMENTS_CONSUMERS", "4")
    stack = LocalStack(StackConfig.from_environment(tmp_path))
    assert (stack.config.payments_processes, stack.config.reconciler_workers) == (3, 1)
    assert stack.service_env("ledger")["LEDGER_PAYMENTS_CONSUMERS"] == "4"
    assert stack.service_env("payments")["PAYMENTS_PROCESSES"] == "3"


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_a_copy_count_that_is_not_a_whole_number_from_one_is_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("RECONCILER_WORKERS", value)
    with pytest.raises(ValueError, match=f"RECONCILER_WORKERS must be a whole number from 1, not '{value}'"):
        StackConfig.from_environment(tmp_path)


def test_the_deployed_shapes_ledger_consumers_are_the_ledgers_own_default() -> None:
    assert LedgerSettings.model_fields["payments_consumers"].default == LEDGER_PAYMENTS_CONSUMERS
