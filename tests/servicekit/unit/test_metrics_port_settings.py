"""Where each service's /metrics listens: its own port, by default the HTTP port + 1000, never the HTTP port."""

import pytest
from pydantic import ValidationError

from ledger.config import Settings as LedgerSettings
from notifier.config import Settings as NotifierSettings
from payments.config import Settings as PaymentsSettings
from reconciler.config import Settings as ReconcilerSettings
from servicekit.settings import METRICS_PORT_OFFSET, ServiceSettings


@pytest.mark.parametrize("settings", [PaymentsSettings, LedgerSettings, ReconcilerSettings, NotifierSettings])
def test_each_service_listens_for_metrics_on_its_http_port_plus_the_offset_by_default(
    settings: type[ServiceSettings], monkeypatch: pytest.MonkeyPatch
) -> None:
    for service in ("PAYMENTS", "LEDGER", "RECONCILER", "NOTIFIER"):
        monkeypatch.delenv(f"{service}_METRICS_PORT", raising=False)
    monkeypatch.delenv("CREDITED_METRICS_HOST", raising=False)
    defaults = settings()
    assert defaults.metrics_address == ("127.0.0.1", defaults.http_port + METRICS_PORT_OFFSET)


def test_the_service_prefixed_variable_and_the_shared_host_choose_the_listener(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGER_METRICS_PORT", "19999")
    monkeypatch.setenv("CREDITED_METRICS_HOST", "0.0.0.0")
    assert LedgerSettings().metrics_address == ("0.0.0.0", 19999)


def test_a_service_on_any_free_port_gets_any_free_metrics_port() -> None:
    assert LedgerSettings(http_port=0).metrics_address[1] == 0


def test_the_metrics_port_may_not_be_the_http_port() -> None:
    with pytest.raises(ValidationError, match="must have a port of its own"):
        LedgerSettings(http_port=8102, metrics_port=8102)


def test_an_http_port_without_room_for_the_default_metrics_port_asks_for_one() -> None:
    with pytest.raises(ValidationError, match="set <SERVICE>_METRICS_PORT"):
        LedgerSettings(http_port=65000)
    assert LedgerSettings(http_port=65000, metrics_port=9102).metrics_address[1] == 9102
