"""The local stack tells payments where the ledger, the reconciler and the notifier answer: the support API's
order timeline asks them (with the caller's key), and the money audit reads the ledger."""

from pathlib import Path

import pytest

from credited.stack.local import LocalStack, StackConfig


def test_payments_is_given_the_ledger_reconciler_and_notifier_urls_of_the_stack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("PAYMENTS_AUDIT_LEDGER_URL", "PAYMENTS_RECONCILER_URL", "PAYMENTS_NOTIFIER_URL"):
        monkeypatch.delenv(variable, raising=False)
    ports = {"payments": 18101, "ledger": 18102, "reconciler": 18103, "notifier": 18104}
    stack = LocalStack(StackConfig(run_dir=tmp_path, ports=ports))
    env = stack.service_env("payments")
    assert (env["PAYMENTS_AUDIT_LEDGER_URL"], env["PAYMENTS_RECONCILER_URL"], env["PAYMENTS_NOTIFIER_URL"]) == (
        stack.url("ledger"), stack.url("reconciler"), stack.url("notifier"),
    )  # fmt: skip
    assert "PAYMENTS_RECONCILER_URL" not in stack.service_env("ledger")
    alone = LocalStack(StackConfig(run_dir=tmp_path / "alone", ports={"payments": 18101})).service_env("payments")
    assert "PAYMENTS_RECONCILER_URL" not in alone and "PAYMENTS_NOTIFIER_URL" not in alone
