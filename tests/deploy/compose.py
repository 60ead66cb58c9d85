"""Reads docker-compose.yml the way Docker Compose does: `docker-compose config`, offline (no engine needed).

The test environment has no PyYAML; the interpreter that runs Debian's docker-compose always has it, so that
interpreter turns compose's resolved YAML into JSON. Docker Compose v2 prints JSON itself.
"""

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from pydantic import AliasChoices
from pydantic_settings import BaseSettings

INSTALL_HINT = "install it with `apt-get update && apt-get install -y docker-compose` (.ci/run does)"


def docker_compose() -> str:
    found = shutil.which("docker-compose")
    if found is None:
        raise AssertionError(f"docker-compose is not on PATH: {INSTALL_HINT}")
    return found


def _python_with_yaml(binary: str) -> str | None:
    """The interpreter that runs Debian's docker-compose (a Python program that needs PyYAML), if it is one."""
    shebang = Path(binary).read_bytes()[:200].split(b"\n", 1)[0]
    if shebang.startswith(b"#!") and b"python" in shebang:
        return shebang[2:].decode().strip().split()[0]
    return None


def yaml_as_json(text: str) -> Any:
    """Any YAML document as data, read by docker-compose's own interpreter."""
    interpreter = _python_with_yaml(docker_compose())
    if interpreter is None:
        raise AssertionError(f"docker-compose is not Debian's Python program: {INSTALL_HINT}")
    to_json = "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"
    done = subprocess.run([interpreter, "-c", to_json], input=text, capture_output=True, text=True, timeout=60)
    _check(done)
    return json.loads(done.stdout)


def resolved_config(root: Path, env_file: Path) -> dict[str, Any]:
    """The compose file with every default and anchor resolved, as Compose itself resolves it.

    A clean environment and an empty env file make the defaults in the file the ones checked."""
    binary = docker_compose()
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(env_file.parent)}
    base = [binary, "-f", str(root / "docker-compose.yml"), "--env-file", str(env_file), "config"]
    if _python_with_yaml(binary) is not None:
        done = subprocess.run(base, capture_output=True, text=True, env=env, cwd=root, timeout=60)
        _check(done)
        return dict(yaml_as_json(done.stdout))
    done = subprocess.run([*base, "--format", "json"], capture_output=True, text=True, env=env, cwd=root, timeout=60)
    _check(done)
    return dict(json.loads(done.stdout))


def _check(done: subprocess.CompletedProcess[str]) -> None:
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, done.args))} failed ({done.returncode}):\n{done.stderr}")


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
