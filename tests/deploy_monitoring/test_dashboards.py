"""The Grafana dashboards: the committed JSON is what the code builds, and it is provisioned."""

import json

from credited_dashboards.__main__ import OUT, rendered

from tests.deploy_monitoring.conftest import ROOT, load_yaml

PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
REQUIRED = {
    "credited-overview",
    "credited-reconciler",
    "credited-channels",
    "credited-notifier",
    "credited-kafka-outbox",
}


def test_the_committed_dashboard_json_is_exactly_what_the_code_builds() -> None:
    committed = {path.name: path.read_text() for path in OUT.glob("*.json")}
    assert committed.keys() == rendered().keys(), "run `make dashboards`"
    drifted = [name for name, text in rendered().items() if committed[name] != text]
    assert drifted == [], f"{drifted} differ from deploy/grafana/credited_dashboards: run `make dashboards`"


def test_the_on_call_dashboards_all_exist_and_query_the_provisioned_prometheus() -> None:
    (datasource,) = load_yaml(PROVISIONING / "datasources" / "prometheus.yml")["datasources"]
    boards = [json.loads(path.read_text()) for path in OUT.glob("*.json")]
    assert {board["uid"] for board in boards} >= REQUIRED
    for board in boards:
        for panel in board["panels"]:
            if panel["type"] in ("row", "text"):  # text: the runbooks, made from docs/runbooks
                continue
            assert panel["datasource"] == {"type": datasource["type"], "uid": datasource["uid"]}, panel["title"]
            assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]


def test_grafana_loads_the_dashboards_from_where_compose_mounts_them() -> None:
    (provider,) = load_yaml(PROVISIONING / "dashboards" / "credited.yml")["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
