"""The local stack never starts a service on a port another process holds: its health check would be
answered by that process (another stack's service) and the stack would run half on someone else's."""

import socket
from pathlib import Path

import pytest

from credited.stack.local import SERVICES, LocalStack, StackConfig


def test_a_service_whose_port_is_taken_is_not_started(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        stack = LocalStack(StackConfig(run_dir=tmp_path, ports={"ledger": port}))
        with pytest.raises(RuntimeError, match=f"port {port} for ledger is in use"):
            stack.start_service("ledger")
    assert stack.services == {}


def test_the_ports_follow_credited_port_base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDITED_PORT_BASE", "18100")
    ports = StackConfig.from_environment(tmp_path).ports
    assert ports == {"payments": 18101, "ledger": 18102, "reconciler": 18103, "notifier": 18104}
    assert set(ports) == set(SERVICES)
