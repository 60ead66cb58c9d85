"""The local stack never starts a service on a port another process holds: its health check would be
answered by that process (another stack's service) and the stack would run half on someone else's."""

import socket
from pathlib import Path

import pytest

from credited.stack.local import SERVICES, LocalStack, StackConfig
from credited.stack.processes import free_port
from servicekit.settings import METRICS_PORT_OFFSET


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
    config = StackConfig.from_environment(tmp_path)
    assert config.ports == {"payments": 18101, "ledger": 18102, "reconciler": 18103, "notifier": 18104}
    assert set(config.ports) == set(SERVICES)
    assert config.metrics_ports == {name: port + METRICS_PORT_OFFSET for name, port in config.ports.items()}


def test_a_service_whose_metrics_port_is_taken_is_not_started(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = StackConfig(run_dir=tmp_path, ports={"ledger": free_port()}, metrics_ports={"ledger": port})
        stack = LocalStack(config)
        with pytest.raises(RuntimeError, match=f"metrics port {port} for ledger is in use"):
            stack.start_service("ledger")
    assert stack.services == {}


def test_a_free_port_is_below_the_ephemeral_range_never_handed_out_twice_and_skips_a_held_one() -> None:
    floor = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    first = free_port()
    with socket.socket() as held:
        held.bind(("127.0.0.1", first + 1))  # the next one the walk would reach
        ports = [free_port() for _ in range(50)]
    assert all(port < floor for port in [first, *ports])
    assert len({first, *ports}) == 51
    assert first + 1 not in ports
