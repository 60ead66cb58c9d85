"""Reads docker-compose.yml the way Docker Compose does: `docker-compose config`, offline (no engine needed)."""

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

SECRETS = {
    "POSTGRES_PASSWORD": "pg-Zq3v9LrT0bXe5mWk",
    "NOTIFIER_WEBHOOK_SECRET": "wh-Zq3v9LrT0bXe5mWk",
    "CREDITED_STATUS_LINK_SECRET": "link-Zq3v9LrT0bXe5mWk8yHn2cJd7fGs4pAu",
    "RECONCILER_PEER_SECRET": "peer-Zq3v9LrT0bXe5mWk8yHn2cJd7fGs4pAu",
    "GRAFANA_ADMIN_PASSWORD": "gf-Zq3v9LrT0bXe5mWk",
    "KAFKA_ADMIN_PASSWORD": "kafka-admin-Zq3v9LrT0bXe5mWk",
    "KAFKA_PASSWORD_PAYMENTS": "kp-Zq3v9LrT0bXe5mWk",
    "KAFKA_PASSWORD_LEDGER": "kl-Zq3v9LrT0bXe5mWk",
    "KAFKA_PASSWORD_RECONCILER": "kr-Zq3v9LrT0bXe5mWk",
    "KAFKA_PASSWORD_NOTIFIER": "kn-Zq3v9LrT0bXe5mWk",
}
"""The secrets compose requires (it has no defaults for them), with values an operator might set."""

INSTALL_HINT = "install it with `apt-get update && apt-get install -y docker-compose` (.ci/run does)"


def docker_compose() -> str:
    found = shutil.which("docker-compose")
    if found is None:
        raise AssertionError(f"docker-compose is not on PATH: {INSTALL_HINT}")
    return found


def compose_config(root: Path, env_file: Path) -> subprocess.CompletedProcess[str]:
    """`docker-compose config` in a clean environment with only `env_file`'s variables."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(env_file.parent)}
    command = [docker_compose(), "-f", str(root / "docker-compose.yml"), "--env-file", str(env_file), "config"]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=root, timeout=60)


def resolved_config(root: Path, env_file: Path) -> dict[str, Any]:
    """The compose file with every default and anchor resolved, as Compose itself resolves it.

    A clean environment and an env file with only the required secrets make the defaults in the file the
    ones checked."""
    env_file.write_text("".join(f"{k}={v}\n" for k, v in SECRETS.items()))
    done = compose_config(root, env_file)
    if done.returncode != 0:
        raise AssertionError(f"docker-compose config failed ({done.returncode}):\n{done.stderr}")
    return dict(yaml.safe_load(done.stdout))


def yaml_file(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def env_names_read_by(settings: type[BaseSettings]) -> set[str]:
    """Every environment variable a Settings class reads: aliases as written, other fields under the prefix."""
    prefix = str(settings.model_config.get("env_prefix", ""))
    names: set[str] = set()
    for name, field in settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {c.upper() for c in alias.choices if isinstance(c, str)}
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add(f"{prefix}{name}".upper())
    return names


def port_mappings(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host address, host port, container port) for each published port, short or long syntax."""
    out = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            out.append((str(entry.get("host_ip", "")), int(entry["published"]), int(entry["target"])))
            continue
        spec = str(entry).split("/", 1)[0]
        parts = spec.split(":")
        host_ip = parts[0] if len(parts) == 3 else ""
        out.append((host_ip, int(parts[-2]), int(parts[-1])))
    return out
